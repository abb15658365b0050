"""Embeddings: one pooled feature vector per image, from a backbone, for a whole data source.

:func:`embed` loads a source as recipes do (``"fashion_mnist"``, ``"folder:PATH"`` or a
bare folder path, ``"tfds:NAME"``, ``(x, y)`` arrays), runs ``pixels -> Preprocess ->
backbone -> global pooling`` over every split in inference mode and returns an
:class:`Embeddings` record; :func:`save_embeddings` writes it as ``embeddings.npy`` ``(n, d)``
and ``index.csv`` (path, label, split) atomically. ``zoo embed`` is the command.

The forward pass is the head stage's cache build (:func:`zoo.caching.compute_activations`):
on the inference engine probed on the first batch (:mod:`zoo.caching.engine`: TensorFlow as
built, BatchNorm folded into the convolutions, or LiteRT, within a relative error of 1e-5
of TensorFlow as built), batches straight from the source's pipeline, in the order the
split lists them.
The pooled vector is what a linear head sees (``zoo.LinearHead`` pools the same map), so a
classifier trained on embeddings is a head stage. Uses ``zoo.data`` (TensorFlow's tf.data).
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from zoo.errors import InvalidValueError
from zoo.files import atomic_path, write_text_atomic

__all__ = ["EMBEDDING_DTYPES", "Embeddings", "embed", "embedding_model", "save_embeddings"]

EMBEDDING_DTYPES = ("float32", "float16")
POOLINGS = ("avg", "max")
SPLITS = ("train", "validation", "test")
EMBEDDINGS_FILE = "embeddings.npy"
INDEX_FILE = "index.csv"
META_FILE = "embeddings.json"


@dataclass
class Embeddings:
    """Pooled backbone features of every image of a source, rows in split order.

    Attributes:
        vectors: ``(n, d)`` float32 or float16, ``d`` the backbone's ``feature_dim``.
        labels: ``(n,)`` int64 class indices (``(n, classes)`` multi-hot for a labels CSV).
        splits: ``(n,)`` split name of each row (``"train"``, ``"validation"``, ``"test"``).
        paths: identity of each row: the path relative to a folder, or the index in the
            source (``"test:12"`` for Fashion-MNIST's own test set).
        class_names: class names, index = label.
        backbone: registry name.
        weights: where the backbone's weights came from (``model.zoo_weights``).
        image_size: ``(height, width)`` the images were resized to.
        seconds: wall time of the forward passes over all splits (data loading included).
        source: the source string as loaded.
        engine: the inference engine of the passes and its probe
            (``zoo.caching.engine.EngineChoice.to_dict``: chosen on the first split's first
            batch, kept for the others); None when nothing was embedded.
    """

    vectors: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    paths: list[str]
    class_names: list[str]
    backbone: str
    weights: dict[str, Any] = field(default_factory=dict)
    image_size: tuple[int, int] = (0, 0)
    seconds: float = 0.0
    source: str = ""
    engine: dict[str, Any] | None = None

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(vectors, labels)`` of one split (empty arrays if it has no rows)."""
        rows = self.splits == name
        return self.vectors[rows], self.labels[rows]

    @property
    def images_per_second(self) -> float:
        """Images embedded per second of :attr:`seconds`."""
        return len(self.vectors) / self.seconds if self.seconds > 0 else 0.0

    def label_text(self, row: int) -> str:
        """The label of ``row`` in words: a class name, or ``a;b`` for multi-hot labels."""
        label = self.labels[row]
        if np.ndim(label) == 0:
            return self.class_names[int(label)]
        return ";".join(n for n, on in zip(self.class_names, label, strict=True) if on > 0.5)


def embedding_model(
    backbone: keras.Model,
    preprocessing: Any,
    pooling: str = "avg",
    tokens: tuple[str, int] | None = None,
) -> keras.Model:
    """``pixels 0..255 (batch, h, w, 3) -> (batch, channels)``: Preprocess, backbone, pooling.

    Args:
        backbone: a model from ``zoo.create_backbone`` (no top).
        preprocessing: the backbone's :class:`zoo.registry.Preprocessing`.
        pooling: ``"avg"`` or ``"max"`` global pooling of the last feature map.
        tokens: for a backbone that returns tokens ``(batch, tokens, dim)`` (a vision
            transformer), the spec's ``(token_pooling, prefix_tokens)``: the class token or
            the mean of the patch tokens, as its classifier head pools them
            (:class:`zoo.heads.TokenPooling`); ``pooling`` is then not used.

    Raises:
        InvalidValueError: unknown pooling, or a token output without ``tokens``.
    """
    from zoo.heads import TokenPooling
    from zoo.preprocessing import Preprocess

    if pooling not in POOLINGS:
        raise InvalidValueError(f"pooling must be one of {POOLINGS}; got {pooling!r}.")
    pixels = keras.Input(backbone.inputs[0].shape[1:], name="pixels")
    x = backbone(Preprocess(preprocessing, name="preprocess")(pixels))
    if len(x.shape) == 3:
        if tokens is None:
            raise InvalidValueError(
                f"{backbone.name} returns tokens {tuple(x.shape)}; pass tokens=(token_pooling, "
                "prefix_tokens) from its spec to pool them."
            )
        pool = TokenPooling(tokens[0], tokens[1], name="pool")
    elif pooling == "avg":
        pool = keras.layers.GlobalAveragePooling2D(name="pool")
    else:
        pool = keras.layers.GlobalMaxPooling2D(name="pool")
    return keras.Model(pixels, pool(x), name=f"{backbone.name}_embedding")


def _source_string(source: Any) -> Any:
    """A bare path to an existing folder means ``folder:PATH`` (as in recipes)."""
    if isinstance(source, str | os.PathLike) and ":" not in str(source) and Path(source).is_dir():
        return f"folder:{source}"
    return source


def embed(
    source: Any,
    backbone: str,
    weights: str | os.PathLike | None = "imagenet",
    *,
    image_size: tuple[int, int] | None = None,
    batch_size: int = 64,
    splits: Sequence[str] = ("train", "validation", "test"),
    dtype: str = "float32",
    pooling: str = "avg",
    model: keras.Model | None = None,
    verbose: int = 0,
    inference_engine: str = "auto",
    **load_options: Any,
) -> Embeddings:
    """Pooled backbone features of every image of ``source``.

    Args:
        source: ``"fashion_mnist"``, ``"folder:PATH"`` (or a path to a folder),
            ``"tfds:NAME[:SPLIT]"`` or ``(x, y)`` arrays, as :func:`zoo.data.load` takes.
        backbone: registry name, e.g. ``"efficientnet_lite0"``.
        weights: ``"imagenet"``, ``None`` or a Keras weights file, as
            :func:`zoo.create_backbone` takes.
        image_size: ``(height, width)`` images are resized to; default the backbone's.
        batch_size: images per forward pass.
        splits: the splits to embed, in this order (absent ones are skipped).
        dtype: ``"float32"`` or ``"float16"`` vectors (computed in float32, then cast).
        pooling: ``"avg"`` or ``"max"`` global pooling of the last feature map.
        model: an embedding model to use instead of building one from ``backbone`` and
            ``weights`` (e.g. :func:`embedding_model` of a fine-tuned backbone).
        verbose: 1 shows a progress bar per split.
        inference_engine: ``"auto"``, ``"tensorflow"`` or ``"litert"``: the engine of the
            forward passes (:mod:`zoo.caching.engine`; recorded in ``engine``).
        **load_options: :func:`zoo.data.load` options (``validation_fraction``,
            ``test_fraction``, ``seed``, ``per_class``, ...).

    Returns:
        The :class:`Embeddings`, rows split by split in ``splits`` order, each split in
        the order the source lists it.

    Raises:
        InvalidValueError: bad ``dtype``, ``pooling``, ``batch_size``, split name or load
            option; nothing to embed.
        KeyError: unknown backbone. Loading errors as :func:`zoo.data.load` raises them.
    """
    from zoo import data as zoo_data
    from zoo.builder import create_backbone
    from zoo.caching.compute import compute_activations
    from zoo.registry import get_spec

    if dtype not in EMBEDDING_DTYPES:
        raise InvalidValueError(f"dtype must be one of {EMBEDDING_DTYPES}; got {dtype!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidValueError(f"batch_size must be a positive int; got {batch_size!r}.")
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise InvalidValueError(f"Unknown split(s) {unknown}; expected some of {SPLITS}.")
    spec = get_spec(backbone)
    size = tuple(image_size) if image_size is not None else tuple(spec.input_size)
    data = zoo_data.load(_source_string(source), **load_options)
    if model is None:
        net = create_backbone(backbone, weights=weights, input_shape=(*size, 3))
        tokens = (spec.token_pooling, spec.prefix_tokens) if spec.token_pooling else None
        model = embedding_model(net, spec.preprocessing, pooling, tokens)
        used_weights = dict(net.zoo_weights)
    else:
        used_weights = dict(getattr(model, "zoo_weights", {}) or {})
    vectors, labels, names, paths = [], [], [], []
    engine: dict[str, Any] | None = None
    start = time.perf_counter()
    for split in splits:
        if data.split(split) is None:
            continue
        batches = data.pipeline(split, size, batch_size, training=False)
        acts = compute_activations(
            model,
            batches,
            budget_bytes=sys.maxsize,
            verbose=verbose,
            label=split,
            engine=inference_engine,
        )
        engine = engine or acts.engine
        vectors.append(np.asarray(acts.x, np.float32).astype(dtype))
        labels.append(np.asarray(acts.y))
        names += [split] * len(acts.x)
        ids = data.identities(split)
        paths += ids if ids is not None else [f"{split}:{i}" for i in range(len(acts.x))]
    if not vectors:
        raise InvalidValueError(f"{data.source} has none of the splits {list(splits)} to embed.")
    return Embeddings(
        vectors=np.concatenate(vectors),
        labels=np.concatenate(labels),
        splits=np.array(names),
        paths=paths,
        class_names=list(data.class_names),
        backbone=backbone,
        weights=used_weights,
        image_size=(int(size[0]), int(size[1])),
        seconds=time.perf_counter() - start,
        source=data.source,
        engine=engine,
    )


def save_embeddings(embeddings: Embeddings, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Writes ``embeddings.npy``, ``index.csv`` and ``embeddings.json`` into ``out_dir``.

    ``index.csv`` has a header ``path,label,split`` and one row per vector, in the same
    order; ``label`` is the class name (``a;b`` for multi-hot labels). ``embeddings.json``
    records the backbone, its weights' sha256, image size, dtype, class names, timing and engine.
    Each file is written atomically (:func:`zoo.files.atomic_path`).

    Returns:
        ``{"embeddings": path, "index": path, "meta": path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "embeddings": out / EMBEDDINGS_FILE,
        "index": out / INDEX_FILE,
        "meta": out / META_FILE,
    }
    with atomic_path(paths["embeddings"]) as tmp:
        np.save(tmp, embeddings.vectors)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "label", "split"])
    for row, (path, split) in enumerate(zip(embeddings.paths, embeddings.splits, strict=True)):
        writer.writerow([path, embeddings.label_text(row), str(split)])
    write_text_atomic(paths["index"], text.getvalue())
    meta = {
        "source": embeddings.source,
        "backbone": embeddings.backbone,
        "weights": embeddings.weights,
        "image_size": list(embeddings.image_size),
        "shape": list(embeddings.vectors.shape),
        "dtype": str(embeddings.vectors.dtype),
        "class_names": embeddings.class_names,
        "seconds": round(embeddings.seconds, 3),
        "images_per_second": round(embeddings.images_per_second, 2),
        "engine": embeddings.engine,
    }
    write_text_atomic(paths["meta"], json.dumps(meta, indent=1) + "\n")
    return paths
