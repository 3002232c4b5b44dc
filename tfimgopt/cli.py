"""The `tfimgopt` command line: a thin shell that builds a config and calls the library.

TensorFlow is imported only inside the commands, so `tfimgopt --help` answers at once.
"""

from __future__ import annotations

import argparse
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
}


def _config_from_args(args: argparse.Namespace):
    from tfimgopt.pipeline import load_config

    overrides = [
        f"{key}={getattr(args, flag)}"
        for flag, key in _FLAG_KEYS.items()
        if getattr(args, flag, None) is not None
    ]
    return load_config(getattr(args, "config", None), overrides + list(args.set or []))


def _cmd_run(args: argparse.Namespace) -> int:
    from tfimgopt.pipeline import run

    run(_config_from_args(args))
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


def _cmd_augment_preview(args: argparse.Namespace) -> int:
    from tfimgopt.pipeline.previews import augmentation_preview

    path = augmentation_preview(
        source=args.source, policy=args.policy, out=args.out, image_size=args.image_size,
        images=args.images, variants=args.variants, seed=args.seed, data_dir=args.data_dir,
    )
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `tfimgopt` command (public for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="tfimgopt",
        description="Train image classifiers faster and ship them smaller.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="the main job: train, optimize, export, report")
    p.add_argument("config", nargs="?", help="YAML/TOML/JSON config file (default: offline digits)")
    p.add_argument("--out", help="run folder (rerun with the same folder to resume)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=3 (repeatable)")
    _add_data_flags(p)
    _add_train_flags(p)
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
