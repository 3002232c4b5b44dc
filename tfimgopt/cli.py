"""The `tfimgopt` command line: a thin shell that builds a config and calls the library.

TensorFlow is imported only inside the commands (`import tfimgopt` does not import it), so
`tfimgopt --help` answers at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--source", help="digits | tfds:<name> | a folder of class subfolders")
    g.add_argument("--image-size", type=int, help="square image size in pixels (default 32)")
    g.add_argument("--batch-size", type=int, help="global batch size (default 64)")
    g.add_argument("--data-dir", help="TFDS data directory (e.g. gs://bucket/tfds)")
    g.add_argument("--download", action="store_true", default=None,
                   help="let TFDS download the dataset (needs network access)")


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--model", help="model name from the zoo (default small_cnn)")
    g.add_argument("--epochs", type=int, help="training epochs")
    g.add_argument("--learning-rate", type=float, help="learning rate")
    g.add_argument("--seed", type=int, help="seed for splits, shuffling and weights")
    g.add_argument("--strategy", help="auto | tpu | mirrored | multi_worker | one_device | default")
    g.add_argument("--augment", help="augmentation policy or layer name, auto or none")


def _add_unlabelled_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("unlabelled images (distillation transfer set)")
    g.add_argument("--unlabelled-fraction", type=float,
                   help="drop the labels of this share of the training split (an experiment)")
    g.add_argument("--unlabelled-folder", help="a folder of extra images without labels")


def _add_unsafe_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--unsafe", action="store_true",
        help="DANGEROUS: load model files with Keras safe mode off. A file with Lambda layers or other stored "
             "code can then run arbitrary Python on this machine; use only for files you made or trust.",
    )


_FLAG_KEYS = {
    "source": "data.source",
    "image_size": "data.image_size",
    "batch_size": "data.batch_size",
    "data_dir": "data.data_dir",
    "download": "data.download",
    "model": "train.model",
    "epochs": "train.epochs",
    "learning_rate": "train.learning_rate",
    "seed": "seed",
    "out": "out_dir",
    "strategy": "train.strategy",
    "augment": "train.augment",
    "unlabelled_fraction": "data.unlabelled_fraction",
    "unlabelled_folder": "data.unlabelled_folder",
    "optimize_for": "export.optimize_for",
    "max_accuracy_drop": "export.max_accuracy_drop",
    "student": "distill.student",
    "alpha": "distill.alpha",
    "temperature": "distill.temperature",
    "tune": "distill.tune",
    "distill_epochs": "distill.epochs",
    "sparsity": "compress.target_sparsity",
    "prune_epochs": "compress.epochs",
    "qat_epochs": "compress.qat_epochs",
}


def _config_from_args(args: argparse.Namespace):
    from tfimgopt.pipeline import load_config

    overrides = [
        f"{key}={json.dumps(getattr(args, flag))}"
        for flag, key in _FLAG_KEYS.items()
        if getattr(args, flag, None) is not None
    ]
    return load_config(getattr(args, "config", None), overrides + list(args.set or []))


def _cmd_run(args: argparse.Namespace) -> int:
    from tfimgopt.pipeline import run

    report = run(_config_from_args(args))
    if report["failed_variants"]:
        print(f"tfimgopt run: {len(report['failed_variants'])} variant(s) failed verification and were left out "
              f"({', '.join(report['failed_variants'])}); the rest of the run finished. Rerun to retry them.",
              file=sys.stderr)
        return 1
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import os

    from tfimgopt.pipeline import prepare_data, train_classifier

    config = _config_from_args(args)
    work_dir = args.work_dir or os.path.splitext(args.output)[0] + ".work"
    record = train_classifier(config, prepare_data(config), args.output, work_dir)
    print(
        f"{record['model']}: test accuracy {record['test_accuracy']:.4f}, "
        f"saved to {record['path']}"
    )
    return 0


def _print_result(result: dict) -> None:
    for key, value in result.items():
        if isinstance(value, float):
            value = f"{value:.4f}"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items() if not isinstance(v, dict | list))
        print(f"{key}: {value}")


def _cmd_distill(args: argparse.Namespace) -> int:
    from tfimgopt.pipeline.steps import distill_step

    _print_result(distill_step(_config_from_args(args), args.teacher, args.output, safe_mode=not args.unsafe))
    return 0


def _cmd_prune(args: argparse.Namespace) -> int:
    from tfimgopt.pipeline.steps import prune_step

    _print_result(prune_step(_config_from_args(args), args.model_file, args.output, safe_mode=not args.unsafe))
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from tfimgopt.pipeline.steps import quantize_step

    _print_result(quantize_step(_config_from_args(args), args.model_file, args.output, safe_mode=not args.unsafe))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from tfimgopt.pipeline.steps import export_step

    result = export_step(_config_from_args(args), args.model_file, args.output, args.mode,
                         safe_mode=not args.unsafe)
    _print_result(result)
    return 0 if result["verify"]["passed"] else 1


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from tfimgopt.pipeline.steps import evaluate_step

    _print_result(evaluate_step(_config_from_args(args), args.model_file, safe_mode=not args.unsafe))
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from tfimgopt.pipeline.steps import verify_run

    result = verify_run(args.run_dir)
    print(f"{args.run_dir}: OK ({result['artifacts']} artifacts re-hashed, {result['tflite_rerun']} TFLite files "
          "re-run in LiteRT with the recorded outputs)")
    return 0


def _cmd_augment_preview(args: argparse.Namespace) -> int:
    from tfimgopt.pipeline.previews import augmentation_preview

    path = augmentation_preview(
        source=args.source, policy=args.policy, out=args.out, image_size=args.image_size,
        images=args.images, variants=args.variants, seed=args.seed, data_dir=args.data_dir,
    )
    print(f"wrote {path}")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from tfimgopt.doctor import doctor

    return doctor()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `tfimgopt` command (public for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="tfimgopt",
        description="Train image classifiers faster and ship them smaller.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="the main job: train, distill, prune, quantize, export, evaluate, report")
    p.add_argument("config", nargs="?", help="YAML/TOML/JSON config file (default: offline digits)")
    p.add_argument("--out", help="run folder (rerun with the same folder to resume)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("--optimize-for", choices=("size", "latency", "accuracy"),
                   help="which measured variant to select (default size)")
    p.add_argument("--max-accuracy-drop", type=float,
                   help="largest accepted accuracy loss in percentage points (default 1.0)")
    _add_data_flags(p)
    _add_train_flags(p)
    _add_unlabelled_flags(p)
    p.set_defaults(fn=_cmd_run)

    p = sub.add_parser("train", help="train one classifier on a source and save it")
    p.add_argument("--output", "-o", required=True, help="where to save the model (.keras)")
    p.add_argument("--work-dir", help="backups for resuming (default: next to --output)")
    p.add_argument("--config", help="YAML/TOML/JSON config file")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value")
    _add_data_flags(p)
    _add_train_flags(p)
    p.set_defaults(fn=_cmd_train)

    p = sub.add_parser("augment-preview", help="draw a PNG grid of what an augmentation policy does")
    p.add_argument("--source", default="digits", help="digits | tfds:<name> | a folder (default digits)")
    p.add_argument("--policy", default="default",
                   help="policy or layer name, or a YAML/JSON list of ops (see tfimgopt.augment.list_augmentations)")
    p.add_argument("--out", default="augment_preview.png", help="PNG path (default augment_preview.png)")
    p.add_argument("--image-size", type=int, default=64, help="square image size (default 64)")
    p.add_argument("--images", type=int, default=6, help="rows: images shown (default 6)")
    p.add_argument("--variants", type=int, default=5, help="augmented versions per image (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the augmentations (default 0)")
    p.add_argument("--data-dir", help="TFDS data directory")
    p.set_defaults(fn=_cmd_augment_preview)

    def step(name, help_text, fn, *, model_arg=True, output=None):
        p = sub.add_parser(name, help=help_text)
        if model_arg:
            p.add_argument("model_file", metavar="MODEL", help="input model file")
        if output:
            p.add_argument("--output", "-o", required=True, help=output)
        p.add_argument("--config", help="YAML/TOML/JSON config file (data and step settings)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value")
        _add_data_flags(p)
        p.add_argument("--seed", type=int, help="seed for splits, shuffling and weights")
        _add_unsafe_flag(p)
        p.set_defaults(fn=fn)
        return p

    p = step("distill", "distil a teacher model file into a small student", _cmd_distill, model_arg=False,
             output="where to save the student (.keras)")
    p.add_argument("--teacher", required=True, help="the trained teacher (.keras)")
    p.add_argument("--student", help="student model name (default tiny_cnn)")
    p.add_argument("--alpha", type=float, help="weight of the hard-label loss in [0, 1]")
    p.add_argument("--temperature", type=float, help="softening temperature > 0")
    p.add_argument("--epochs", dest="distill_epochs", type=int, help="distillation epochs")
    p.add_argument("--tune", action="store_true", default=None, help="choose alpha and temperature on val data")
    _add_unlabelled_flags(p)
    p = step("prune", "prune a model file (magnitude pruning, fine-tune, strip)", _cmd_prune,
             output="where to save the pruned model (.keras)")
    p.add_argument("--sparsity", type=float, help="target fraction of zero weights (default 0.5)")
    p.add_argument("--epochs", dest="prune_epochs", type=int, help="fine-tuning epochs")
    p = step("quantize", "quantization-aware fine-tuning, then int8 TFLite export", _cmd_quantize,
             output="where to write the int8 model (.tflite)")
    p.add_argument("--epochs", dest="qat_epochs", type=int, help="QAT epochs (default 1)")
    p = step("export", "export a model file to TFLite, verified in LiteRT", _cmd_export,
             output="where to write the model (.tflite)")
    p.add_argument("--mode", default="float32", help="float32 | dynamic | float16 | int8 (default float32)")
    step("evaluate", "accuracy of a .keras model, or accuracy/latency/size of a .tflite model", _cmd_evaluate)

    p = sub.add_parser("doctor", help="versions, devices, the strategy and precision `auto` picks, known-bad installs")
    p.set_defaults(fn=_cmd_doctor)

    p = sub.add_parser("verify", help="re-hash a run folder's artifacts and re-run its TFLite files")
    p.add_argument("run_dir", help="a folder written by tfimgopt run")
    p.set_defaults(fn=_cmd_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tfimgopt` console script."""
    args = build_parser().parse_args(argv)
    from tfimgopt.errors import TfimgoptError

    try:
        return args.fn(args)
    except TfimgoptError as err:
        print(f"tfimgopt {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
