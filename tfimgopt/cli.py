"""The `tfimgopt` command line: a thin shell that builds a config and calls the library.

TensorFlow is imported only inside the commands (`import tfimgopt` does not import it), so
`tfimgopt --help` answers at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


class _Choices:
    """A registry's names, read on first use: building the parser must not import TensorFlow
    (`tfimgopt --help` answers at once); `tfimgopt run --help` and a bad value read them."""

    def __init__(self, lister):
        self._lister = lister
        self._names = None

    def _get(self):
        if self._names is None:
            self._names = list(self._lister())
        return self._names

    def __iter__(self):
        return iter(self._get())

    def __contains__(self, value):
        return value in self._get()


def _config_settings():
    """`(dotted key, field, type)` of every setting of `RunConfig`, from its dataclasses."""
    import dataclasses
    import typing

    from tfimgopt.pipeline.config import RunConfig

    def walk(cls, prefix):
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[field.name]):
                yield from walk(hints[field.name], f"{prefix}{field.name}.")
            else:
                yield f"{prefix}{field.name}", field, hints[field.name]

    return list(walk(RunConfig, ""))


def _scalar_type(annotation):
    import typing

    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return args[0] if len(args) == 1 and args[0] in (int, float, str, bool) else None


def _add_config_flags(p: argparse.ArgumentParser, command: str) -> None:
    """The flags `command` takes, with help, defaults and choices from the config's field metadata."""
    import dataclasses

    from tfimgopt.pipeline.config import CHEAP_CHOICES, CHOICES

    groups: dict[str, argparse._ArgumentGroup] = {}
    for key, field, annotation in _config_settings():
        flag = field.metadata.get("flags", {}).get(command)
        kind = _scalar_type(annotation)
        if flag is None or kind is None:
            continue
        section = key.split(".")[0] if "." in key else "run"
        group = groups.setdefault(section, p.add_argument_group(f"{section} settings"))
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        help_text = field.metadata["help"].replace("%", "%%") + f" ({key}; default {default})"
        extra = {}
        if kind is bool:
            extra["action"] = argparse.BooleanOptionalAction
        else:
            extra["type"] = kind
            extra["metavar"] = flag.replace("-", "_").upper()
        lister = field.metadata.get("choices")
        if lister in CHEAP_CHOICES:
            extra["choices"] = _Choices(CHOICES[lister])
            help_text += "; one of: %(choices)s"
        elif lister:  # its registry needs TensorFlow: checked (and listed) when a value is given
            help_text += "; a wrong name lists the valid ones"
        group.add_argument(f"--{flag}", dest=f"config:{key}", default=None, help=help_text, **extra)


def _add_unsafe_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--unsafe", action="store_true",
        help="DANGEROUS: load model files with Keras safe mode off. A file with Lambda layers or other stored "
             "code can then run arbitrary Python on this machine; use only for files you made or trust.",
    )


def _config_from_args(args: argparse.Namespace):
    from tfimgopt.pipeline import load_config

    overrides = [f"{dest[len('config:'):]}={json.dumps(value)}" for dest, value in vars(args).items()
                 if dest.startswith("config:") and value is not None]
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
    tuned = (f", fine-tuned from {record['weights']} weights (phase 2: top {len(record['fine_tuned'])} layers)"
             if "fine_tuned" in record else "")
    print(f"{record['model']}: test accuracy {record['test_accuracy']:.4f}{tuned}, saved to {record['path']}")
    return 0


def _print_result(result: dict) -> None:
    for key, value in result.items():
        if isinstance(value, float):
            value = f"{value:.4f}"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={'->'.join(map(str, v)) if isinstance(v, list) else v}"
                              for k, v in value.items() if not isinstance(v, dict))
        print(f"{key}: {value}")


def _cmd_distill(args: argparse.Namespace) -> int:
    from tfimgopt.pipeline.steps import distill_step

    _print_result(distill_step(_config_from_args(args), args.teacher, args.output, safe_mode=not args.unsafe))
    return 0


def _cmd_prune(args: argparse.Namespace) -> int:
    from tfimgopt.pipeline.steps import prune_step

    _print_result(prune_step(_config_from_args(args), args.model_file, args.output, safe_mode=not args.unsafe,
                             structured=args.structured))
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
    print(f"{args.run_dir}: OK ({result['artifacts']} artifacts re-hashed, {result['rerun']} exported files "
          "re-run, outputs as recorded)")
    return 0


def _cmd_augment_preview(args: argparse.Namespace) -> int:
    from tfimgopt.pipeline.previews import augmentation_preview

    path = augmentation_preview(
        source=args.source, policy=args.policy, out=args.out, image_size=args.image_size,
        images=args.images, variants=args.variants, seed=args.seed, data_dir=args.data_dir,
    )
    print(f"wrote {path}")
    return 0


def _cmd_data_shard(args: argparse.Namespace) -> int:
    from tfimgopt.data import write_shards

    write_shards(args.source, args.out, image_size=args.image_size, channels=args.channels,
                 images_per_shard=args.images_per_shard, quality=args.quality, val_fraction=args.val_fraction,
                 test_fraction=args.test_fraction, seed=args.seed, data_dir=args.data_dir, download=args.download)
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
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's start-up and the converter's logs, and Keras's line per epoch")
    shared.add_argument("--plugin", action="append", metavar="FILE.py|MODULE", default=[],
                        help="import your own exporters, techniques, stages or models first (repeatable); "
                             "their names are then valid everywhere")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_parser = sub.add_parser

    def with_shared(name, **kwargs):
        return add_parser(name, parents=[shared], **kwargs)

    sub.add_parser = with_shared

    p = sub.add_parser("run", help="the main job: train, distill, prune, quantize, export, evaluate, report")
    p.add_argument("config", nargs="?",
                   help="YAML/TOML/JSON config file or a shipped example (default: offline digits)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any config value, e.g. --set train.epochs=3 (repeatable)")
    _add_config_flags(p, "run")
    p.set_defaults(fn=_cmd_run)

    p = sub.add_parser("train", help="train one classifier on a source and save it")
    p.add_argument("--output", "-o", required=True, help="where to save the model (.keras)")
    p.add_argument("--work-dir", help="backups for resuming (default: next to --output)")
    p.add_argument("--config", help="YAML/TOML/JSON config file")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value")
    _add_config_flags(p, "train")
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
        _add_config_flags(p, name)
        _add_unsafe_flag(p)
        p.set_defaults(fn=fn)
        return p

    p = step("distill", "distil a teacher model file into a small student", _cmd_distill, model_arg=False,
             output="where to save the student (.keras)")
    p.add_argument("--teacher", required=True, help="the trained teacher (.keras)")
    p = step("prune", "prune a model file (magnitude pruning, fine-tune, strip; or --structured)", _cmd_prune,
             output="where to save the pruned model (.keras)")
    p.add_argument("--structured", action="store_true",
                   help="remove whole channels (--channel-ratio of them) instead of single weights: a smaller, "
                        "faster dense model")
    step("quantize", "quantization-aware fine-tuning, then int8 TFLite export", _cmd_quantize,
         output="where to write the int8 model (.tflite)")
    p = step("export", "export a model file (TFLite by default), verified in LiteRT", _cmd_export,
             output="where to write the model (.tflite)")
    from tfimgopt.pipeline.config import CHOICES

    p.add_argument("--mode", default="float32", choices=_Choices(CHOICES["exporters"]), metavar="MODE",
                   help="exporter (default float32); one of: %(choices)s")
    step("evaluate", "accuracy of a .keras model, or accuracy/latency/size of an exported one (.tflite, SavedModel)",
         _cmd_evaluate)

    p = sub.add_parser("data", help="data tools: `data shard` writes resized TFRecord shards for big data")
    data_sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    p = data_sub.add_parser("shard", parents=[shared],
                            help="resize a source once into TFRecord shards + manifest (read back with --source DIR)")
    p.add_argument("source", help="digits | tfds:<name> | a folder of class subfolders | a .npz file")
    p.add_argument("--out", required=True, help="a new or empty folder, or gs://bucket/path")
    p.add_argument("--image-size", type=int, default=224, help="square size stored (default 224)")
    p.add_argument("--channels", type=int, choices=(1, 3), help="1 or 3 (default: the source's)")
    p.add_argument("--images-per-shard", type=int, default=1024, help="images per TFRecord file (default 1024)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality of the stored images (default 95)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="validation share (default 0.1)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="test share where the source has none (0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    p.add_argument("--data-dir", help="TFDS data directory")
    p.add_argument("--download", action="store_true", help="let TFDS download the dataset (needs network)")
    p.set_defaults(fn=_cmd_data_shard)

    p = sub.add_parser("doctor", help="versions, devices, the strategy and precision `auto` picks, known-bad installs")
    p.set_defaults(fn=_cmd_doctor)

    p = sub.add_parser("verify", help="re-hash a run folder's artifacts and re-run its exported files")
    p.add_argument("run_dir", help="a folder written by tfimgopt run")
    p.set_defaults(fn=_cmd_verify)
    return parser


def _plugins_in(argv: Sequence[str]) -> list[str]:
    """The `--plugin` values, read before parsing: a plugin's names (e.g. an exporter for
    `--mode`) must be registered when argparse checks the choices."""
    found, args = [], list(argv)
    for i, arg in enumerate(args):
        if arg == "--plugin" and i + 1 < len(args):
            found.append(args[i + 1])
        elif arg.startswith("--plugin="):
            found.append(arg.partition("=")[2])
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tfimgopt` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    plugins = _plugins_in(argv)
    if plugins:
        from tfimgopt._plugins import load_plugin
        from tfimgopt.errors import TfimgoptError

        try:
            for plugin in plugins:
                load_plugin(plugin)
        except TfimgoptError as err:
            print(f"tfimgopt: error: {err}", file=sys.stderr)
            return 2
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse printed the usage error (or --help): return its status
        return exit_.code if isinstance(exit_.code, int) else 2
    from tfimgopt._quiet import set_quiet, start_tensorflow
    from tfimgopt.errors import TfimgoptError

    set_quiet(not args.verbose)
    try:
        if args.command != "doctor":  # the doctor checks the installation before TensorFlow loads
            start_tensorflow()
        return args.fn(args)
    except TfimgoptError as err:
        print(f"tfimgopt {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
