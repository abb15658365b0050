"""The run report: ``report.json`` for machines, ``report.md`` and PNG plots for people.

* :mod:`recipes.report.metrics`: the numbers, from scikit-learn (top-1, top-5, balanced
  accuracy, per-class precision and recall, mAP, F1), the error analysis (highest
  losses, most-confused pairs) and calibration (temperature, ECE);
* :mod:`recipes.report.run_report`: the typed report (:class:`RunReport` and its parts)
  and its JSON form;
* :mod:`recipes.report.plots`: training curves, confusion matrix, the highest-loss images,
  the reliability diagram;
* :mod:`recipes.report.markdown`: ``report.md``.

:func:`write_report` writes them all into a run directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from recipes.report.markdown import _deployment_section as _deployment_section
from recipes.report.markdown import render_markdown
from recipes.report.metrics import (
    TOP_LOSSES,
    average_precision,
    calibration,
    classification_metrics,
    error_analysis,
    expected_calibration_error,
    fit_temperature,
    multilabel_metrics,
)
from recipes.report.plots import (
    plot_confusion_matrix,
    plot_reliability,
    plot_top_losses,
    plot_training_curves,
)
from recipes.report.run_report import (
    CacheReport,
    DataReport,
    RunReport,
    SettingsReport,
    StageReport,
    VerifyReport,
)
from zoo.files import write_text_atomic

__all__ = [
    "TOP_LOSSES",
    "CacheReport",
    "DataReport",
    "RunReport",
    "SettingsReport",
    "StageReport",
    "VerifyReport",
    "average_precision",
    "calibration",
    "classification_metrics",
    "error_analysis",
    "expected_calibration_error",
    "fit_temperature",
    "multilabel_metrics",
    "plot_confusion_matrix",
    "plot_reliability",
    "plot_top_losses",
    "plot_training_curves",
    "render_markdown",
    "write_report",
]


def write_report(
    report: RunReport, run_dir: str | os.PathLike, top_loss_images: np.ndarray | None = None
) -> dict[str, Path]:
    """Writes ``report.json``, ``plots/*.png`` and ``report.md`` into ``run_dir``.

    Args:
        report: the run's report; ``report.json`` is ``report.to_dict()``.
        run_dir: the run directory.
        top_loss_images: pixels 0..255 ``(n, height, width, 3)`` of the first ``n``
            entries of ``report.evaluation["top_losses"]``, for their grid; None: no grid.

    Returns:
        ``{"json", "markdown", "training_curves", "confusion_matrix", "top_losses",
        "reliability"}`` ->
        written paths (the plots only when there is something to plot).
    """
    run_dir = Path(run_dir)
    plots_dir = run_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if any(s.history.get("loss") for s in report.stages):
        written["training_curves"] = plot_training_curves(
            report.stages, plots_dir / "training_curves.png"
        )
    matrix = report.evaluation.get("confusion_matrix")
    if matrix:
        written["confusion_matrix"] = plot_confusion_matrix(
            matrix,
            report.class_names or [c["class"] for c in report.evaluation["per_class"]],
            plots_dir / "confusion_matrix.png",
            split=report.evaluated_on,
        )
    top_losses = report.evaluation.get("top_losses")
    if top_losses and top_loss_images is not None and len(top_loss_images):
        written["top_losses"] = plot_top_losses(
            top_loss_images, top_losses, plots_dir / "top_losses.png", split=report.evaluated_on
        )
    calibrated = report.evaluation.get("calibration")
    if calibrated and calibrated.get("reliability"):
        written["reliability"] = plot_reliability(
            calibrated, plots_dir / "reliability.png", split=report.evaluated_on
        )
    relative = {k: p.relative_to(run_dir).as_posix() for k, p in written.items()}
    written["json"] = run_dir / "report.json"
    write_text_atomic(written["json"], json.dumps(report.to_dict(), indent=2) + "\n")
    written["markdown"] = run_dir / "report.md"
    write_text_atomic(written["markdown"], render_markdown(report, relative))
    return written
