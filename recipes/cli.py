"""The ``zoo`` command: pretrained backbones to verified, deployable image classifiers.

Each subcommand is a ``_cmd_*`` function registered in :func:`build_parser`. A user
error (a :class:`zoo.ZooError`: unknown name, bad file, bad recipe) prints one line to
stderr and exits 2, with no traceback; a failed verification exits 1; any other exception
is a bug and keeps its traceback (exit 1).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's C++ start-up noise out


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silences fd 2 while TensorFlow's C++ runtime loads.

    TensorFlow 2.21 logs through absl before its log level is read, so
    TF_CPP_MIN_LOG_LEVEL does not stop those lines; they would bury the one-line errors.
    """
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _quiet_native_stderr():
    import keras  # noqa: F401  (loads the backend, TensorFlow by default)

    from recipes.text import print_table
    from zoo.errors import ZooError


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("zoo")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


class UserError(ZooError):
    """A mistake in a command's arguments; printed as one line, exit code 2."""


def _cmd_list(args: argparse.Namespace) -> int:
    from zoo import get_spec, list_backbones
    from zoo.weights import availability

    names = list_backbones(args.pattern)
    if not names:
        raise UserError(f"No backbone matches {args.pattern!r}; try `zoo list` for all.")
    rows = [("name", "input", "params", "GMACs", "top-1", "weights")]
    for name in names:
        spec = get_spec(name)
        weights = availability(spec)
        # A top-1 belongs to weights: none where the registry has no ImageNet weights.
        top1 = f"{spec.top1:.3f}" if spec.top1 is not None and weights != "none" else "-"
        rows.append(
            (
                name,
                f"{spec.input_size[0]}x{spec.input_size[1]}",
                f"{spec.params / 1e6:.1f}M",
                f"{spec.gmacs:.2f}",
                top1,
                weights,
            )
        )
    print_table(rows)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from zoo import get_spec
    from zoo.weights import offline_status

    spec = get_spec(args.name)
    top1 = f"{spec.top1:.3f}" if spec.top1 is not None else "unknown"
    fields = [
        ("name", spec.name),
        ("family", spec.family),
        ("input size", f"{spec.input_size[0]}x{spec.input_size[1]} (height x width), RGB"),
        ("preprocessing", spec.preprocessing.describe()),
        (
            "features",
            f"{spec.feature_dim} channels (last feature map, before pooling)"
            if spec.token_pooling is None
            else f"{spec.feature_dim} per token (heads pool the {spec.token_pooling} token"
            f"{'s' if spec.token_pooling == 'mean' else ''})",
        ),
        (
            "parameters",
            f"{spec.params:,} without top"
            + (f", {spec.params_with_top:,} with top" if spec.params_with_top else ""),
        ),
        ("GMACs", f"{spec.gmacs:.3f} per image at {spec.input_size[0]}x{spec.input_size[1]}"),
        ("ImageNet top-1", top1),
        ("blocks", f"{len(spec.blocks)}: " + ", ".join(spec.block_names)),
        ("weights (no top)", offline_status(spec, include_top=False)),
        ("weights (top)", offline_status(spec, include_top=True)),
    ]
    fields += [
        (
            f"  file{' (top)' if s.include_top else ''}",
            f"{s.url} {s.hash_algorithm}="
            + (
                s.file_hash
                or ("recorded when fetched" if s.kind == "keras_hub" else "recorded at conversion")
            ),
        )
        for s in spec.weights
    ]
    fields += [("licence", spec.license), ("paper", spec.paper), ("source", spec.source)]
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        print(f"{key.ljust(width)}  {value}")
    return 0


def _cmd_weights_add(args: argparse.Namespace) -> int:
    from zoo.weights import add_weights

    path = add_weights(args.file, args.backbone, include_top=args.include_top)
    print(f"added {args.file} for {args.backbone} at {path}")
    return 0


def _cmd_weights_path(args: argparse.Namespace) -> int:
    from zoo import get_spec
    from zoo.weights import cache_path

    path = cache_path(get_spec(args.name), include_top=args.include_top)
    if path is None:
        raise UserError(f"{args.name!r} has no ImageNet weights file.")
    print(path)
    return 0


def _cmd_weights_import_torch(args: argparse.Namespace) -> int:
    from zoo.builder import import_torch_checkpoint

    path = import_torch_checkpoint(
        args.checkpoint, args.backbone, include_top=args.include_top, output=args.output
    )
    print(f"imported {args.checkpoint} for {args.backbone} at {path}")
    return 0


def _add_data_arguments(p: argparse.ArgumentParser) -> None:
    """DATA and how it is split and sized, shared by ``zoo embed`` and ``zoo curve``."""
    p.add_argument("data", help="fashion_mnist, folder:PATH (or a folder), tfds:NAME[:SPLIT]")
    p.add_argument(
        "--image-size", type=int, nargs=2, metavar=("H", "W"), help="default the backbone's"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--validation-fraction", type=float, help="default 0.1")
    p.add_argument(
        "--test-fraction", type=float, help="hold out a test split of the training images"
    )
    p.add_argument("--per-class", type=int, help="keep this many training images per class")
    p.add_argument("--seed", type=int, default=0, help="split and subset seed")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``zoo`` command, one sub-parser per subcommand."""
    parser = argparse.ArgumentParser(
        prog="zoo",
        description="zoo: pretrained backbones to verified, deployable image classifiers.",
        epilog="Environment: ZOO_OFFLINE=1 never touches the network (weights and datasets "
        "come from the cache, installed packages and local files, or fail at once with one "
        "line); KERAS_HOME and ZOO_HOME move the caches.",
    )
    parser.add_argument("--version", action="version", version=f"zoo {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list registered backbones")
    p.add_argument("pattern", nargs="?", default="*", help="glob, e.g. 'resnet*'")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="every field of one backbone's spec")
    p.add_argument("name")
    p.set_defaults(func=_cmd_info)

    weights = sub.add_parser("weights", help="manage pretrained weight files")
    wsub = weights.add_subparsers(dest="weights_command", required=True)
    p = wsub.add_parser(
        "add", help="add a downloaded weights file (or KerasHub preset directory) to the cache"
    )
    p.add_argument("file", help="a weights file, or a KerasHub preset directory")
    p.add_argument("--backbone", required=True)
    p.add_argument("--include-top", action="store_true")
    p.set_defaults(func=_cmd_weights_add)
    p = wsub.add_parser("path", help="where a backbone's weights live in the cache")
    p.add_argument("name")
    p.add_argument("--include-top", action="store_true")
    p.set_defaults(func=_cmd_weights_path)

    def _cmd_run(args: argparse.Namespace) -> int:
        from recipes.runner import main_run

        return main_run(args.recipe, args.out, args.resume, args.set)

    p = sub.add_parser("run", help="run a recipe: fine-tune, test, export, verify, report")
    p.add_argument("recipe", help="a recipe .toml file or a built-in recipe name")
    p.add_argument("--out", help="run directory (default: runs/<recipe>-<timestamp>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. stages.1.epochs=2 (repeatable)",
    )
    p.set_defaults(func=_cmd_run)

    p = wsub.add_parser("import-torch", help="convert a PyTorch checkpoint into Keras weights")
    p.add_argument("checkpoint", help="a .pth state dict, e.g. efficientnet-lite0-57934424.pth")
    p.add_argument("--backbone", required=True)
    p.add_argument("--include-top", action="store_true")
    p.add_argument("--output", help="a .weights.h5 file (default: zoo's weights cache)")
    p.set_defaults(func=_cmd_weights_import_torch)

    def _cmd_verify(args: argparse.Namespace) -> int:
        from recipes.export import is_leftover
        from recipes.verify import main_verify

        if is_leftover(args.export_dir):  # complete or not, it was never swapped into place
            raise UserError(
                f"{args.export_dir} is the working directory of an export that was interrupted,"
                " not an export; verify the export itself (the next export there removes it)."
            )
        return main_verify(
            args.export_dir,
            args.source_manifest,
            args.require_proof,
            recipe=args.recipe,
            expect_frozen=args.expect_frozen,
        )

    p = sub.add_parser("verify", help="check an export: manifest, frozen weights, parity")
    p.add_argument("export_dir", help="a directory written by the export step")
    p.add_argument(
        "--source-manifest",
        help="a manifest of the pretrained weights you trust (JSON), checked besides the "
        "registry's pinned file",
    )
    p.add_argument(
        "--require-proof",
        action="store_true",
        help="exit 1 unless the frozen set is derived from a recipe, is not empty when the "
        "recipe froze anything, and an anchor proves it unchanged",
    )
    p.add_argument(
        "--recipe",
        metavar="FILE",
        help="the recipe you trust (e.g. the run's recipe.toml): the frozen set is derived "
        "from it instead of the recipe recorded in the export",
    )
    p.add_argument(
        "--expect-frozen",
        type=int,
        metavar="N",
        help="exit 1 unless at least N variables are frozen in every stage",
    )
    p.set_defaults(func=_cmd_verify)

    def _cmd_predict(args: argparse.Namespace) -> int:
        from recipes.predict import main_predict

        return main_predict(args.export_dir, args.images, args.top_k, args.format)

    p = sub.add_parser("predict", help="top-k classes of image files with an export")
    p.add_argument("export_dir", help="a directory written by the export step")
    p.add_argument("images", nargs="+", help="JPEG, PNG, GIF, BMP or WebP files")
    p.add_argument("--top-k", type=int, default=5, help="classes per image (default 5)")
    p.add_argument(
        "--format",
        default="saved_model",
        help="saved_model (default), or a deployed file: tflite, tflite-fp16, tflite-int8, onnx",
    )
    p.set_defaults(func=_cmd_predict)

    def _cmd_datasets(args: argparse.Namespace) -> int:
        from zoo.data.catalog import datasets_table

        print_table(datasets_table())
        return 0

    p = sub.add_parser("datasets", help="data sources and whether each is available offline")
    p.set_defaults(func=_cmd_datasets)

    def _cmd_export(args: argparse.Namespace) -> int:
        from recipes.deploy import main_export
        from recipes.runner import run_deploy_inputs

        # A run directory brings its own calibration images and evaluation split.
        def run_inputs(calibrate: bool) -> dict | None:
            return run_deploy_inputs(args.path, calibrate)

        return main_export(args.path, args.format, args.calibration, run_inputs, args.vendor)

    p = sub.add_parser(
        "export", help="write LiteRT / ONNX files or a web page into an export, checked"
    )
    p.add_argument(
        "path",
        help="a run directory (calibration and top-1 from its data) or an export directory",
    )
    p.add_argument(
        "--format",
        action="append",
        required=True,
        help="tflite, tflite-fp16, tflite-int8, onnx, or web: a static page that "
        "classifies photos in the browser with MediaPipe Tasks (repeatable)",
    )
    p.add_argument(
        "--calibration",
        help="training images for tflite-int8 (default for a run directory: its own): "
        "a directory of image files or a .npy array",
    )
    p.add_argument(
        "--vendor",
        help="with --format web: a local node_modules/@mediapipe/tasks-vision (1.1.0) to "
        "copy into the page, so it works offline (default: loaded from jsDelivr)",
    )
    p.set_defaults(func=_cmd_export)

    def _cmd_embed(args: argparse.Namespace) -> int:
        from recipes.embed import main_embed

        return main_embed(args)

    p = sub.add_parser("embed", help="pooled backbone features of every image of a source")
    _add_data_arguments(p)
    p.add_argument("--backbone", help="registry name (or --export)")
    p.add_argument("--export", help="embed with an export's fine-tuned backbone (RUN_DIR/export)")
    p.add_argument("--weights", default="imagenet", help="imagenet (default), none or a file")
    p.add_argument("--out", required=True, help="folder for embeddings.npy and index.csv")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    p.add_argument("--pooling", choices=("avg", "max"), default="avg")
    p.add_argument(
        "--split",
        action="append",
        choices=("train", "validation", "test"),
        help="embed only this split (repeatable; default all)",
    )
    p.set_defaults(func=_cmd_embed)

    def _cmd_curve(args: argparse.Namespace) -> int:
        from recipes.curve import main_curve

        return main_curve(args)

    p = sub.add_parser(
        "curve", help="validation top-1 against training images per class (kNN, probe, head)"
    )
    _add_data_arguments(p)
    p.add_argument("--backbone", required=True, help="registry name, e.g. efficientnet_lite0")
    p.add_argument("--weights", default="imagenet", help="imagenet (default), none or a file")
    p.add_argument("--out", required=True, help="folder for curve.md, curve.csv, curve.png")
    p.add_argument(
        "--points",
        nargs="+",
        default=["5", "10", "25", "50", "100", "all"],
        metavar="N",
        help="images per class to measure, or 'all' (default: 5 10 25 50 100 all)",
    )
    p.add_argument(
        "--method",
        action="append",
        choices=("knn", "probe", "head"),
        help="measure only this method (repeatable; default all three)",
    )
    p.add_argument("--k", type=int, default=10, help="neighbours of the kNN classifier")
    p.set_defaults(func=_cmd_curve)

    def _cmd_lr_find(args: argparse.Namespace) -> int:
        from recipes.lr_find import main_lr_find

        return main_lr_find(args)

    p = sub.add_parser(
        "lr-find", help="learning-rate range test on a recipe's stage: plot and suggestion"
    )
    p.add_argument("recipe", help="a recipe .toml file or a built-in recipe name")
    p.add_argument(
        "--stage", type=int, default=0, help="the stage to test, counted from 0 (default 0)"
    )
    p.add_argument("--out", help="folder for lr_find.png and lr_find.json")
    p.add_argument("--steps", type=int, default=100, help="steps of the test (default 100)")
    p.add_argument("--start-lr", type=float, default=1e-7, help="first rate (default 1e-7)")
    p.add_argument("--end-lr", type=float, default=10.0, help="last rate (default 10)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, as for zoo run (repeatable)",
    )
    p.set_defaults(func=_cmd_lr_find)

    # -- more subcommands: add each as its own block above this line --
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``zoo`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ZooError as error:  # a user's mistake; anything else is a bug: traceback, exit 1
        message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
        print(
            f"zoo: error: {message.splitlines()[0] if message else type(error).__name__}",
            file=sys.stderr,
        )
        return 2
    except OSError as error:  # a full disk anywhere (zoo's own writes say more) is one line
        from zoo.files import disk_full

        full = disk_full(error, error.filename or os.getcwd())
        if full is None:
            raise
        print(f"zoo: error: {full}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
