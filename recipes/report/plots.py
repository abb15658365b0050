"""The report's pictures, drawn with matplotlib's Agg backend (files only, no display).

Training curves across the stages, the confusion matrix, and the grid of the images with
the highest loss.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recipes.report.run_report import StageReport, accuracy_key

__all__ = [
    "plot_confusion_matrix",
    "plot_reliability",
    "plot_top_losses",
    "plot_training_curves",
]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; works without a display
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(stages: Sequence[StageReport], path: str | os.PathLike) -> Path:
    """Loss and accuracy per epoch across all stages, one line per split.

    Args:
        stages: the report's stages; each has ``name`` and ``history`` (Keras'
            ``History.history``: metric name -> one value per epoch).
        path: the PNG to write.

    Returns:
        ``path`` as a Path. Stage boundaries are dashed vertical lines, labelled.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    start = 0
    for index, stage in enumerate(stages):
        history = stage.history
        acc = accuracy_key(history)
        epochs = len(history.get("loss", []))
        x = np.arange(start + 1, start + epochs + 1)
        colour = f"C{index % 10}"
        for ax, key in ((axes[0], "loss"), (axes[1], acc)):
            if key is None:
                continue
            for prefix, style, split in (("", "-", "train"), ("val_", "--", "validation")):
                values = history.get(prefix + key)
                if values:
                    ax.plot(
                        x[: len(values)],
                        values,
                        style,
                        marker="o",
                        markersize=3,
                        color=colour,
                        label=f"{stage.name} ({split})",
                    )
        for ax in axes:
            if index:
                ax.axvline(start + 0.5, color="grey", linestyle=":", linewidth=1)
            if epochs:  # name the stage above its span
                ax.annotate(
                    stage.name,
                    xy=(start + 0.5 + epochs / 2, 1.0),
                    xycoords=("data", "axes fraction"),
                    xytext=(0, 3),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    color=colour,
                )
        start += epochs
    from matplotlib.ticker import MaxNLocator

    axes[0].set_title("loss", pad=14)
    axes[1].set_title("accuracy", pad=14)
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch (all stages)")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    axes[1].set_ylim(top=1.0)
    fig.suptitle("training curves: solid = train, dashed = validation")
    return _save(plt, fig, path)


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]],
    class_names: Sequence[str],
    path: str | os.PathLike,
    split: str = "test",
) -> Path:
    """The confusion matrix of one split, coloured by row-normalised recall, with counts.

    Args:
        matrix: ``(classes, classes)`` counts, rows = true class, columns = predicted.
        class_names: axis labels.
        path: the PNG to write.
        split: the split the counts come from, for the title.
    """
    plt = _pyplot()
    counts = np.asarray(matrix, dtype=np.int64)
    k = counts.shape[0]
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape, float), where=rows > 0)
    size = max(4.5, 0.55 * k + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1, size), dpi=110)
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if k <= 30:  # beyond that the numbers are unreadable; the colours still tell
        for i in range(k):
            for j in range(k):
                if counts[i, j]:
                    ax.text(
                        j,
                        i,
                        str(counts[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black",
                    )
    ax.set_xticks(range(k), [str(c) for c in class_names], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), [str(c) for c in class_names], fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    total = counts.sum()
    accuracy = np.trace(counts) / total if total else float("nan")
    ax.set_title(f"{split} confusion matrix (top-1 {accuracy:.3f}, {total} images)")
    return _save(plt, fig, path)


def plot_top_losses(
    images: np.ndarray,
    top_losses: Sequence[dict[str, Any]],
    path: str | os.PathLike,
    split: str = "test",
    columns: int = 4,
) -> Path:
    """The images with the highest loss, each titled true / predicted / probability.

    Args:
        images: ``(n, height, width, 3)`` pixels 0..255 (or ``(n, h, w)`` greyscale), the
            first ``n`` entries of ``top_losses`` in the same order.
        top_losses: ``recipes.report.metrics.error_analysis(...)["top_losses"]``.
        path: the PNG to write.
        split: the split the images come from, for the title.
        columns: images per row.

    Returns:
        ``path`` as a Path.

    Raises:
        InvalidValueError: more images than entries, or no images.
    """
    from zoo.errors import InvalidValueError

    pixels = np.asarray(images)
    n = len(pixels)
    if n == 0 or n > len(top_losses):
        raise InvalidValueError(
            f"plot_top_losses: {n} images for {len(top_losses)} entries; pass between 1 and "
            "as many images as entries, in the same order."
        )
    plt = _pyplot()
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.9 * rows), dpi=110)
    for ax in np.asarray(axes).reshape(-1):
        ax.axis("off")
    for i, (ax, entry) in enumerate(zip(np.asarray(axes).reshape(-1), top_losses, strict=False)):
        if i >= n:
            break
        image = np.clip(pixels[i], 0, 255).astype(np.uint8)
        ax.imshow(image.squeeze(), cmap="gray" if image.squeeze().ndim == 2 else None)
        ax.set_title(
            f"true {entry['true']}\npredicted {entry['predicted']} ({entry['probability']:.2f})",
            fontsize=8,
            color="black" if entry["true"] == entry["predicted"] else "firebrick",
        )
    fig.suptitle(f"{split}: the {n} images with the highest loss", fontsize=10)
    return _save(plt, fig, path)


def plot_reliability(
    calibrated: dict[str, Any], path: str | os.PathLike, split: str = "test"
) -> Path:
    """The reliability diagram: accuracy against confidence per bin, before and after
    temperature scaling; a calibrated model lies on the diagonal.

    Args:
        calibrated: ``recipes.report.metrics.calibration(...)``.
        path: the PNG to write.
        split: the split it was measured on, for the title.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 5.0), dpi=110)
    ax.plot([0, 1], [0, 1], ":", color="grey", label="calibrated")
    curves = calibrated["reliability"]
    for name, colour, label in (
        ("before", "C3", "as trained"),
        ("after", "C0", f"temperature {calibrated['temperature']:.2f}"),
    ):
        curve = curves.get(name) or {}
        ece = calibrated.get(f"ece_{name}")
        ax.plot(
            curve.get("confidence", []),
            curve.get("accuracy", []),
            "-o",
            markersize=3,
            color=colour,
            label=f"{label} (ECE {ece:.3f})" if ece is not None else label,
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{split} reliability, {calibrated['bins']} bins")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return _save(plt, fig, path)


def _save(plt: Any, fig: Any, path: str | os.PathLike) -> Path:
    """Lays out, writes and closes a figure; returns its path."""
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
