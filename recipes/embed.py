"""``zoo embed``: every image of a source as a pooled feature vector, written to a folder.

``zoo embed DATA --backbone NAME [--weights imagenet] --out DIR`` embeds with a registered
backbone; ``zoo embed DATA --export EXPORT_DIR --out DIR`` with the fine-tuned backbone of
an export (its ``model.keras``: the classifier's ``preprocess`` and ``backbone`` layers,
pooled as its head pools). Either way :func:`zoo.embed` does the work and
:func:`zoo.embeddings.save_embeddings` writes ``embeddings.npy``, ``index.csv`` and
``embeddings.json`` atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from zoo.errors import InvalidValueError, MissingFileError

__all__ = ["export_embedding_model", "main_embed", "source_options"]


def source_options(
    validation_fraction: float | None,
    test_fraction: float | None,
    seed: int,
    per_class: int | None,
) -> dict[str, Any]:
    """``zoo.data.load`` options from the command's flags (unset ones left out)."""
    options: dict[str, Any] = {"seed": seed}
    for key, value in (
        ("validation_fraction", validation_fraction),
        ("test_fraction", test_fraction),
        ("per_class", per_class),
    ):
        if value is not None:
            options[key] = value
    return options


def export_embedding_model(export_dir: str | os.PathLike) -> tuple[Any, str, tuple[int, int]]:
    """The embedding model of an export's fine-tuned classifier.

    Returns:
        ``(model, backbone_name, (height, width))``: ``pixels -> preprocess -> backbone
        -> global pooling`` over the export's own layers (pooling as its head's, average
        when the head pools another way), its backbone's registry name and input size.

    Raises:
        MissingFileError: no ``model.keras`` in ``export_dir``.
        InvalidValueError: the file is not a zoo classifier.
    """
    import keras

    from recipes import export_format as fmt
    from zoo.classifier import classifier_info

    path = Path(export_dir) / fmt.KERAS_FILE
    if not path.is_file():
        raise MissingFileError(
            f"{export_dir} holds no {fmt.KERAS_FILE}; pass the export directory a run wrote "
            "(RUN_DIR/export)."
        )
    classifier = keras.saving.load_model(path, safe_mode=True)
    try:
        info = classifier_info(classifier)
        preprocess = classifier.get_layer("preprocess")
        backbone = classifier.get_layer("backbone")
    except (ValueError, KeyError) as error:
        raise InvalidValueError(f"{path} is not a zoo classifier: {error}") from error
    pooling = getattr(classifier.get_layer("head"), "pooling", "avg")
    pool = (
        keras.layers.GlobalMaxPooling2D if pooling == "max" else keras.layers.GlobalAveragePooling2D
    )
    pixels = keras.Input(classifier.inputs[0].shape[1:], name="pixels")
    model = keras.Model(pixels, pool(name="pool")(backbone(preprocess(pixels))), name="embedding")
    model.zoo_weights = {"source": str(path), "sha256": None}
    size = tuple(int(d) for d in classifier.inputs[0].shape[1:3])
    return model, str(info["backbone"]), size


def main_embed(args: Any) -> int:
    """The ``zoo embed`` command: embeds, writes, prints one summary line; returns 0."""
    from zoo.embeddings import embed, save_embeddings

    if (args.backbone is None) == (args.export is None):
        raise InvalidValueError("zoo embed needs one of --backbone NAME or --export EXPORT_DIR.")
    options = source_options(
        args.validation_fraction, args.test_fraction, args.seed, args.per_class
    )
    model, backbone, size = None, args.backbone, args.image_size
    if args.export is not None:
        model, backbone, size = export_embedding_model(args.export)
        if args.image_size is not None and tuple(args.image_size) != size:
            raise InvalidValueError(
                f"--image-size {args.image_size} differs from the export's input size {size}; "
                "leave it out."
            )
    result = embed(
        args.data,
        backbone,
        weights=None if args.weights.lower() == "none" else args.weights,
        image_size=tuple(size) if size is not None else None,
        batch_size=args.batch_size,
        splits=tuple(args.split) if args.split else ("train", "validation", "test"),
        dtype=args.dtype,
        pooling=args.pooling,
        model=model,
        verbose=1,
        **options,
    )
    paths = save_embeddings(result, args.out)
    counts = {s: int((result.splits == s).sum()) for s in dict.fromkeys(result.splits.tolist())}
    print(
        f"embedded {len(result.vectors)} images ({', '.join(f'{n} {s}' for s, n in counts.items())}) "
        f"with {backbone} at {result.image_size[0]}x{result.image_size[1]}: "
        f"{result.vectors.shape[1]} {result.vectors.dtype} values each, "
        f"{result.images_per_second:.1f} images/s; wrote {paths['embeddings']} and {paths['index']}"
    )
    return 0
