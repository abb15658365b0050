"""The run report: ``report.json`` for machines, ``report.md`` and PNG plots for people.

The runner assembles one JSON-able dict (see :func:`write_report` for its keys) and hands
it here. This module computes the test metrics (:func:`classification_metrics`), draws
the training curves and the confusion matrix with matplotlib's Agg backend (no display
needed), and writes the Markdown page that links them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import InvalidValueError

__all__ = [
    "classification_metrics",
    "plot_confusion_matrix",
    "plot_training_curves",
    "render_markdown",
    "write_report",
]


def classification_metrics(
    labels: Sequence[int] | np.ndarray,
    predictions: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
) -> dict[str, Any]:
    """Top-1 accuracy, per-class precision and recall, and the confusion matrix.

    Args:
        labels: true class indices, shape ``(n,)``.
        predictions: predicted class indices (argmax of the logits), shape ``(n,)``.
        class_names: one name per class; ``len(class_names)`` is the number of classes.

    Returns:
        ``{"top1", "images", "per_class": [{"class", "precision", "recall", "support"}],
        "confusion_matrix"}``; ``confusion_matrix[i][j]`` counts images of true class
        ``i`` predicted as ``j``. A class never predicted has precision ``None`` (0/0).

    Raises:
        ValueError: different lengths, or a class index outside ``range(len(class_names))``.
    """
    y_true = np.asarray(labels, dtype=np.int64).reshape(-1)
    y_pred = np.asarray(predictions, dtype=np.int64).reshape(-1)
    k = len(class_names)
    if y_true.shape != y_pred.shape:
        raise InvalidValueError(
            f"labels and predictions differ in length: {y_true.size} vs {y_pred.size}."
        )
    for name, values in (("labels", y_true), ("predictions", y_pred)):
        if values.size and (values.min() < 0 or values.max() >= k):
            raise InvalidValueError(
                f"{name} hold class indices {values.min()}..{values.max()}, "
                f"outside 0..{k - 1} for {k} class names."
            )
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    per_class = []
    for i, name in enumerate(class_names):
        predicted, actual, hit = matrix[:, i].sum(), matrix[i, :].sum(), matrix[i, i]
        per_class.append(
            {
                "class": str(name),
                "precision": float(hit / predicted) if predicted else None,
                "recall": float(hit / actual) if actual else None,
                "support": int(actual),
            }
        )
    return {
        "top1": float(np.trace(matrix) / y_true.size) if y_true.size else None,
        "images": int(y_true.size),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }


# ---------------------------------------------------------------------------------------
# Plots


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; works without a display
    import matplotlib.pyplot as plt

    return plt


def _accuracy_key(history: Mapping[str, Sequence[float]]) -> str | None:
    keys = [k for k in history if not k.startswith("val_") and "acc" in k]
    return keys[0] if keys else None


def plot_training_curves(stages: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Loss and accuracy per epoch across all stages, one line per split.

    Args:
        stages: the report's ``stages`` entries; each has ``name`` and ``history``
            (Keras' ``History.history``: metric name -> one value per epoch).
        path: the PNG to write.

    Returns:
        ``path`` as a Path. Stage boundaries are dashed vertical lines, labelled.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    start = 0
    for index, stage in enumerate(stages):
        history = stage.get("history") or {}
        acc = _accuracy_key(history)
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
                        label=f"{stage['name']} ({split})",
                    )
        for ax in axes:
            if index:
                ax.axvline(start + 0.5, color="grey", linestyle=":", linewidth=1)
            if epochs:  # name the stage above its span
                ax.annotate(
                    stage["name"],
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
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: str | os.PathLike
) -> Path:
    """The test confusion matrix, coloured by row-normalised recall, with counts.

    Args:
        matrix: ``(classes, classes)`` counts, rows = true class, columns = predicted.
        class_names: axis labels.
        path: the PNG to write.
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
    ax.set_title(f"test confusion matrix (top-1 {accuracy:.3f}, {total} images)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------
# Markdown


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return lines


def _last(history: Mapping[str, Sequence[float]], key: str | None) -> float | None:
    values = history.get(key, []) if key else []
    return float(values[-1]) if values else None


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def _cache_text(cache: Mapping[str, Any] | None) -> str:
    if not cache:
        return "-"
    if not cache.get("used"):
        return f"not used: {cache.get('reason') or 'no reason given'}"
    details = [str(cache.get("where") or "?")]
    if cache.get("bytes") is not None:
        details.append(_size(cache["bytes"]))
    if cache.get("seconds_saved") is not None:
        about = "~" if cache.get("seconds_saved_is_estimate") else ""
        details.append(f"saved {about}{cache['seconds_saved']:.0f} s")
    if cache.get("reused"):
        details.append("reused")
    if cache.get("derived_from"):
        details.append(f"derived from the {cache['derived_from']} activations")
    reason = f"{cache['reason']} " if cache.get("reason") else ""
    return f"{reason}({', '.join(details)})"


def render_markdown(report: Mapping[str, Any], plots: Mapping[str, str]) -> str:
    """The report as Markdown: results first, then stages, classes, verification.

    Args:
        report: the dict written to ``report.json``.
        plots: plot name -> path relative to the report (``"training_curves"``,
            ``"confusion_matrix"``).
    """
    test = report.get("test") or {}
    verify = report.get("verify") or {}
    lines = [f"# {report.get('recipe', 'run')}", ""]
    if report.get("description"):
        lines += [str(report["description"]), ""]
    lines += ["## Result", ""]
    lines += _table(
        ["test top-1", "test images", "backbone", "input", "wall time", "verified"],
        [
            [
                report.get("test_top1"),
                test.get("images"),
                report.get("backbone"),
                "x".join(str(v) for v in report.get("input_shape", [])[:2]) or "-",
                f"{report.get('wall_seconds', 0.0):.0f} s",
                {True: "yes", False: "**NO**"}.get(verify.get("passed"), "not run"),
            ]
        ],
    )
    lines.append("")
    if "training_curves" in plots:
        lines += [f"![training curves]({plots['training_curves']})", ""]
    lines += ["## Stages", ""]
    rows = []
    for stage in report.get("stages", []):
        history = stage.get("history") or {}
        acc = _accuracy_key(history)
        rows.append(
            [
                stage.get("name"),
                stage.get("policy"),
                len(history.get("loss", [])),
                _last(history, acc),
                _last(history, f"val_{acc}" if acc else None),
                f"{stage.get('seconds', 0.0):.1f}",
                _fmt(stage.get("images_per_second"), 1),
                _cache_text(stage.get("cache")),
            ]
        )
    lines += _table(
        ["stage", "policy", "epochs", "train acc", "val acc", "seconds", "images/s", "cache"],
        rows,
    )
    lines.append("")
    if test.get("per_class"):
        lines += ["## Test set, per class", ""]
        lines += _table(
            ["class", "precision", "recall", "images"],
            [[c["class"], c["precision"], c["recall"], c["support"]] for c in test["per_class"]],
        )
        lines.append("")
    if "confusion_matrix" in plots:
        lines += [f"![confusion matrix]({plots['confusion_matrix']})", ""]
    lines += ["## Verification", ""]
    if verify:
        lines.append(f"passed: {'yes' if verify.get('passed') else 'no'}")
        lines += [f"- {failure}" for failure in verify.get("failures", [])]
    else:
        lines.append("not run")
    lines.append("")
    data = report.get("data") or {}
    skipped = data.get("skipped") or []
    lines += ["## Data", ""]
    lines += _table(
        ["source", "train", "validation", "test", "skipped files"],
        [
            [
                data.get("source"),
                data.get("train_images"),
                data.get("validation_images"),
                data.get("test_images"),
                len(skipped),
            ]
        ],
    )
    lines += [f"- skipped `{s['path']}`: {s['reason']}" for s in skipped[:20]]
    if len(skipped) > 20:
        lines.append(f"- ... and {len(skipped) - 20} more (report.json lists them all)")
    timings = report.get("timings") or {}
    if timings:
        lines += ["", "## Timings", ""]
        lines += _table(["step", "seconds"], [[k, f"{v:.1f}"] for k, v in timings.items()])
    lines.append("")
    return "\n".join(lines)


def write_report(report: Mapping[str, Any], run_dir: str | os.PathLike) -> dict[str, Path]:
    """Writes ``report.json``, ``plots/*.png`` and ``report.md`` into ``run_dir``.

    Args:
        report: JSON-able dict. Keys read here: ``recipe``, ``description``,
            ``test_top1``, ``wall_seconds``, ``backbone``, ``input_shape``, ``class_names``,
            ``stages`` (``name``, ``policy``, ``history``, ``seconds``,
            ``images_per_second``, ``cache``), ``test`` (from
            :func:`classification_metrics`), ``verify`` (``passed``, ``failures``),
            ``data`` (``source``, counts, ``skipped``), ``timings``. Other keys are kept
            in the JSON as they are.
        run_dir: the run directory.

    Returns:
        ``{"json", "markdown", "training_curves", "confusion_matrix"}`` -> written paths
        (the plots only when there is something to plot).
    """
    run_dir = Path(run_dir)
    plots_dir = run_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if any((s.get("history") or {}).get("loss") for s in report.get("stages", [])):
        written["training_curves"] = plot_training_curves(
            report["stages"], plots_dir / "training_curves.png"
        )
    test = report.get("test") or {}
    if test.get("confusion_matrix"):
        written["confusion_matrix"] = plot_confusion_matrix(
            test["confusion_matrix"],
            report.get("class_names") or [c["class"] for c in test["per_class"]],
            plots_dir / "confusion_matrix.png",
        )
    relative = {k: p.relative_to(run_dir).as_posix() for k, p in written.items()}
    written["json"] = run_dir / "report.json"
    written["json"].write_text(json.dumps(report, indent=2, default=_jsonable) + "\n")
    written["markdown"] = run_dir / "report.md"
    written["markdown"].write_text(render_markdown(report, relative))
    return written


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, set | frozenset):
        return sorted(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"report value of type {type(value).__name__} is not JSON-able")
