"""``zoo curve``: validation top-1 against training images per class, without a full run.

How many images per class does a dataset need? :func:`run_curve` embeds the training and
validation images once (:func:`zoo.embed`, the head stage's folded forward pass), then, for
each point (5, 10, 25, 50, 100 images per class and all of them, by default), fits three
classifiers on the pooled features of a nested, seeded subset of the training images and
scores them on the whole validation split:

1. ``knn``: k-nearest neighbours by cosine similarity of the centred features
   (scikit-learn, brute force), a vote of the ``k`` closest training images;
2. ``probe``: a logistic-regression linear probe (scikit-learn, L2, lbfgs) on standardized
   features;
3. ``head``: zoo's own head stage: :class:`zoo.LinearHead` (dropout 0.2, softmax) trained
   with Adam at 1e-3 as the catalog recipes' head stage is, for 10 epochs and at least 300
   steps. On pooled features it is the head stage's exact function (the head pools the
   backbone's map the same way), so no image is run through the backbone again.

Each point costs seconds (its time is recorded). The subsets are nested (the 10 images of
a class include its 5), so the curve moves only by the number of images. The result goes
to ``curve.csv``, ``curve.md``, ``curve.json`` and ``curve.png`` (matplotlib) in the output
folder, each written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recipes.text import format_cell, markdown_table, plain_table
from zoo.errors import InvalidValueError
from zoo.files import atomic_path, write_text_atomic

__all__ = [
    "METHODS",
    "CurvePoint",
    "CurveResult",
    "knn_classify",
    "learning_curve",
    "linear_probe",
    "main_curve",
    "nested_subset",
    "run_curve",
    "train_head",
    "write_curve",
]

METHODS = ("knn", "probe", "head")
DEFAULT_POINTS = (5, 10, 25, 50, 100, None)  # None: every training image
HEAD_EPOCHS, HEAD_MIN_STEPS, HEAD_LEARNING_RATE, HEAD_DROPOUT = 10, 300, 1e-3, 0.2


@dataclass(frozen=True)
class CurvePoint:
    """One point of the curve.

    Attributes:
        per_class: images per class asked for (``None``: all).
        train_images: training images used (a class with fewer gives all it has).
        top1: method -> validation top-1 (fraction).
        seconds: method -> wall time of fitting and scoring, in seconds.
    """

    per_class: int | None
    train_images: int
    top1: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class CurveResult:
    """A learning curve and what it was measured on.

    Attributes:
        points: one :class:`CurvePoint` per size, smallest first.
        methods: the methods measured, in column order.
        backbone, image_size, source: what the features came from.
        validation_images: the images every point is scored on.
        embed_seconds: wall time of embedding the training and validation images.
        embed_images: how many images that was.
        k: neighbours of the kNN classifier.
        num_classes: classes of the data.
    """

    points: list[CurvePoint]
    methods: tuple[str, ...]
    num_classes: int = 0
    backbone: str = ""
    image_size: tuple[int, int] = (0, 0)
    source: str = ""
    validation_images: int = 0
    embed_seconds: float = 0.0
    embed_images: int = 0
    k: int = 10

    def rows(self) -> list[list[Any]]:
        """Table rows: images per class, training images, then top-1 and seconds per method."""
        return [
            [
                "all" if p.per_class is None else p.per_class,
                p.train_images,
                *[v for m in self.methods for v in (p.top1[m], p.seconds[m])],
            ]
            for p in self.points
        ]

    def header(self) -> list[str]:
        """Column titles of :meth:`rows`."""
        cols = [c for m in self.methods for c in (f"{m} top-1", f"{m} s")]
        return ["images per class", "train images", *cols]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        d["methods"] = list(self.methods)
        return d


def nested_subset(labels: np.ndarray, per_class: int | None, seed: int = 0) -> np.ndarray:
    """Row indices of ``per_class`` rows of each class, nested across sizes.

    Each class's rows are shuffled once with ``seed``; a size takes the first ``per_class``
    of them, so a smaller subset is always inside a larger one.

    Args:
        labels: ``(n,)`` integer labels.
        per_class: rows per class (a class with fewer gives all); ``None`` for all rows.
        seed: the shuffle's seed.

    Returns:
        Sorted row indices.
    """
    if per_class is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    chosen = [order[labels[order] == c][:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


def knn_classify(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int = 10
) -> np.ndarray:
    """Labels of ``test_x`` by a vote of the ``k`` nearest training rows, cosine distance.

    Features are centred on the training mean first (pooled ReLU features share a large
    positive component that brings every cosine similarity close to 1; Wang et al., 2019,
    "SimpleShot"), then scikit-learn's ``KNeighborsClassifier(metric="cosine",
    algorithm="brute")`` votes. ``k`` is capped at the training images of the smallest
    class, so that a few images per class do not make the vote a tie of every class.

    Returns:
        ``(len(test_x),)`` predicted labels.
    """
    from sklearn.neighbors import KNeighborsClassifier

    center = np.mean(train_x, axis=0, dtype=np.float64).astype(np.float32)
    counts = np.bincount(np.asarray(train_y))
    k = max(1, min(k, int(counts[counts > 0].min())))
    knn = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute")
    return knn.fit(train_x - center, train_y).predict(test_x - center)


def linear_probe(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, seed: int = 0
) -> np.ndarray:
    """Labels of ``test_x`` by logistic regression on standardized features.

    scikit-learn's ``StandardScaler`` then ``LogisticRegression`` (L2, ``C=1``, lbfgs, up
    to 1,000 iterations): the linear probe of Kornblith et al., 2019, "Do Better ImageNet
    Models Transfer Better?".

    Returns:
        ``(len(test_x),)`` predicted labels.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(
        StandardScaler(), LogisticRegression(C=1.0, max_iter=1000, random_state=seed)
    )
    return probe.fit(train_x, train_y).predict(test_x)


def train_head(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    num_classes: int,
    *,
    epochs: int = HEAD_EPOCHS,
    min_steps: int = HEAD_MIN_STEPS,
    batch_size: int = 64,
    learning_rate: float = HEAD_LEARNING_RATE,
    dropout: float = HEAD_DROPOUT,
    seed: int = 0,
) -> np.ndarray:
    """Labels of ``test_x`` by zoo's head stage trained on pooled features.

    A :class:`zoo.LinearHead` (dropout, then a softmax layer) on ``(n, d)`` features, Adam
    at ``learning_rate``, sparse cross-entropy, ``epochs`` epochs but at least
    ``min_steps`` steps (a handful of images per class is otherwise a handful of steps).

    Returns:
        ``(len(test_x),)`` predicted labels.
    """
    import keras

    from zoo.heads import LinearHead

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((train_x.shape[1],), name="features")
    head = LinearHead(num_classes, dropout=dropout)
    model = keras.Model(inputs, head(inputs))
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = np.asarray(train_x, np.float32), np.asarray(train_y)
    steps = math.ceil(len(x) / batch_size)
    if steps * epochs >= min_steps:
        model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0)
    else:  # a few images: min_steps batches of shuffled passes, one fit (no epoch overhead)
        rng = np.random.default_rng(seed)
        passes = math.ceil(min_steps * batch_size / len(x))
        order = np.concatenate([rng.permutation(len(x)) for _ in range(passes)])
        model.fit(x[order], y[order], batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    test_x = np.asarray(test_x, np.float32)
    predicted = [
        np.argmax(keras.ops.convert_to_numpy(model(test_x[i : i + 4096], training=False)), axis=-1)
        for i in range(0, len(test_x), 4096)
    ]
    return np.concatenate(predicted)


def _check_points(points: Sequence[int | None]) -> None:
    """Raises InvalidValueError unless every point is None or a whole number >= 1."""
    if any(
        p is not None and (isinstance(p, bool) or not isinstance(p, int) or p < 1) for p in points
    ):
        raise InvalidValueError(
            f"Images per class must be whole numbers >= 1 or 'all'; got {list(points)}."
        )


def learning_curve(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    points: Sequence[int | None] = DEFAULT_POINTS,
    methods: Sequence[str] = METHODS,
    *,
    num_classes: int | None = None,
    k: int = 10,
    seed: int = 0,
    echo: Any = None,
) -> CurveResult:
    """Validation top-1 of each method at each number of training images per class.

    Args:
        train_x, train_y: pooled training features ``(n, d)`` and integer labels ``(n,)``.
        val_x, val_y: the validation split's.
        points: images per class, ``None`` for all; sorted, duplicates dropped.
        methods: some of :data:`METHODS`.
        num_classes: classes of the head; default one more than the largest label.
        k: neighbours for ``knn``.
        seed: subset, probe and head seed.
        echo: called with one line per point (e.g. ``print``), or None.

    Returns:
        The :class:`CurveResult` (without the embedding fields).

    Raises:
        InvalidValueError: unknown method, a point below 1, labels that are not single
            class indices, or empty splits.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise InvalidValueError(f"Unknown method(s) {unknown}; choose from {', '.join(METHODS)}.")
    _check_points(points)
    if np.ndim(train_y) != 1:
        raise InvalidValueError(
            "The curve needs one class per image; multi-label data (a labels CSV) has no top-1."
        )
    if len(train_x) == 0 or len(val_x) == 0:
        raise InvalidValueError(
            f"The curve needs training and validation images; got {len(train_x)} and "
            f"{len(val_x)}. Set a validation fraction above 0."
        )
    classes = num_classes or int(max(train_y.max(), val_y.max())) + 1
    ordered = sorted(set(points), key=lambda p: math.inf if p is None else p)
    fits = {
        "knn": lambda x, y: knn_classify(x, y, val_x, k),
        "probe": lambda x, y: linear_probe(x, y, val_x, seed),
        "head": lambda x, y: train_head(x, y, val_x, classes, seed=seed),
    }
    result: list[CurvePoint] = []
    for per_class in ordered:
        rows = nested_subset(train_y, per_class, seed)
        x, y = train_x[rows], train_y[rows]
        top1, seconds = {}, {}
        for method in methods:
            start = time.perf_counter()
            predicted = fits[method](x, y)
            seconds[method] = round(time.perf_counter() - start, 3)
            top1[method] = round(float(np.mean(predicted == val_y)), 4)
        point = CurvePoint(per_class, len(rows), top1, seconds)
        result.append(point)
        if echo is not None:
            scores = ", ".join(f"{m} {top1[m]:.4f} ({seconds[m]:.1f} s)" for m in methods)
            echo(
                f"{'all' if per_class is None else per_class} per class ({len(rows)} images): {scores}"
            )
    return CurveResult(
        result, tuple(methods), num_classes=classes, validation_images=len(val_x), k=k
    )


def plot_curve(result: CurveResult, path: str | os.PathLike) -> Path:
    """Validation top-1 against training images per class (log scale), one line per method."""
    import matplotlib

    matplotlib.use("Agg")  # files only; works without a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    n = [p.train_images / max(1, result.num_classes) for p in result.points]
    for method in result.methods:
        ax.plot(n, [p.top1[method] for p in result.points], marker="o", label=method)
    ax.set_xscale("log")
    ax.set_xlabel("training images per class (mean over classes)")
    ax.set_ylabel(f"validation top-1 ({result.validation_images} images)")
    ax.set_title(
        f"{result.backbone} at {result.image_size[0]}x{result.image_size[1]}: {result.source}"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return Path(path)


def write_curve(result: CurveResult, out_dir: str | os.PathLike) -> dict[str, Path]:
    """``curve.csv``, ``curve.md``, ``curve.json`` and ``curve.png`` into ``out_dir``.

    Returns:
        Name -> path written (``csv``, ``markdown``, ``json``, ``plot``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": out / "curve.csv",
        "markdown": out / "curve.md",
        "json": out / "curve.json",
        "plot": out / "curve.png",
    }
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(result.header())
    writer.writerows([[format_cell(c, 4) for c in row] for row in result.rows()])
    write_text_atomic(paths["csv"], text.getvalue())
    lines = [
        f"# Validation top-1 against training images per class: {result.backbone}",
        "",
        f"Features: {result.backbone} at {result.image_size[0]}x{result.image_size[1]}, "
        f"pooled, from {result.source}; {result.embed_images} images embedded in "
        f"{result.embed_seconds:.1f} s. Every point is scored on the same "
        f"{result.validation_images} validation images; kNN with k = {result.k}.",
        "",
        *markdown_table(result.header(), result.rows()),
        "",
    ]
    write_text_atomic(paths["markdown"], "\n".join(lines))
    write_text_atomic(paths["json"], json.dumps(result.to_dict(), indent=1) + "\n")
    plot_curve(result, paths["plot"])
    return paths


def run_curve(
    source: Any,
    backbone: str,
    weights: str | None = "imagenet",
    *,
    points: Sequence[int | None] = DEFAULT_POINTS,
    methods: Sequence[str] = METHODS,
    image_size: tuple[int, int] | None = None,
    batch_size: int = 64,
    k: int = 10,
    seed: int = 0,
    echo: Any = None,
    **load_options: Any,
) -> CurveResult:
    """Embeds ``source``'s training and validation images once, then :func:`learning_curve`.

    When every point is a number, only the largest one's images per class are embedded
    (a stratified subset, ``per_class``), since the smaller subsets are drawn from them.

    Args:
        source: as :func:`zoo.embed` takes (``"fashion_mnist"``, a folder, ...).
        backbone, weights, image_size, batch_size: as :func:`zoo.embed` takes.
        points, methods, k, seed, echo: as :func:`learning_curve` takes.
        **load_options: :func:`zoo.data.load` options (``validation_fraction``, ...).

    Returns:
        The :class:`CurveResult`.
    """
    from zoo.embeddings import embed

    _check_points(points)
    if None not in points and points and "per_class" not in load_options:
        load_options["per_class"] = max(points)
    embedded = embed(
        source,
        backbone,
        weights,
        image_size=image_size,
        batch_size=batch_size,
        splits=("train", "validation"),
        seed=seed,
        verbose=1 if echo is not None else 0,
        **load_options,
    )
    if echo is not None:
        echo(
            f"embedded {len(embedded.vectors)} images in {embedded.seconds:.1f} s "
            f"({embedded.images_per_second:.1f} images/s)"
        )
    train_x, train_y = embedded.split("train")
    val_x, val_y = embedded.split("validation")
    result = learning_curve(
        np.asarray(train_x, np.float32),
        train_y,
        np.asarray(val_x, np.float32),
        val_y,
        points,
        methods,
        num_classes=len(embedded.class_names),
        k=k,
        seed=seed,
        echo=echo,
    )
    result.backbone = backbone
    result.image_size = embedded.image_size
    result.source = embedded.source
    result.embed_seconds = round(embedded.seconds, 3)
    result.embed_images = len(embedded.vectors)
    return result


def _points(texts: Sequence[str]) -> list[int | None]:
    points: list[int | None] = []
    for text in texts:
        if text == "all":
            points.append(None)
            continue
        try:
            points.append(int(text))
        except ValueError:
            raise InvalidValueError(
                f"--points takes whole numbers or 'all'; got {text!r}."
            ) from None
    return points


def main_curve(args: Any) -> int:
    """The ``zoo curve`` command: measures, writes, prints the table; returns 0."""
    from recipes.embed import source_options

    options = source_options(
        args.validation_fraction, args.test_fraction, args.seed, args.per_class
    )
    options.pop("seed")
    result = run_curve(
        args.data,
        args.backbone,
        None if args.weights.lower() == "none" else args.weights,
        points=_points(args.points),
        methods=tuple(args.method) if args.method else METHODS,
        image_size=tuple(args.image_size) if args.image_size else None,
        batch_size=args.batch_size,
        k=args.k,
        seed=args.seed,
        echo=print,
        **options,
    )
    paths = write_curve(result, args.out)
    print("\n".join(plain_table([result.header(), *result.rows()])))
    print(f"wrote {paths['markdown']}, {paths['csv']} and {paths['plot']}")
    return 0
