"""The run report: ``report.json`` for machines, ``report.md`` and PNG plots for people.

The runner fills one :class:`RunReport` (with a :class:`StageReport` per stage, each
with its :class:`CacheReport`, plus :class:`DataReport`, :class:`SettingsReport` and
:class:`VerifyReport`) and hands it here. ``RunReport.to_dict`` / ``from_dict`` are the
one JSON conversion. This module also computes the evaluation metrics
(:func:`classification_metrics`), draws the training curves and the confusion matrix with
matplotlib's Agg backend (no display needed), and writes the Markdown page that links
them.

The headline number is named after the split it was measured on: ``test_top1`` when
the run evaluated on a held-out test split, ``validation_top1`` when the recipe asked
for ``[data] evaluate_on = "validation"``. Validation drove early stopping, so its number
is never called "test". A multi-label run's headline is the mean average precision
(``test_mAP``, :func:`multilabel_metrics`) instead of top-1.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recipes.text import format_cell, jsonable, markdown_table
from zoo.errors import InvalidValueError
from zoo.files import write_text_atomic

__all__ = [
    "CacheReport",
    "DataReport",
    "RunReport",
    "SettingsReport",
    "StageReport",
    "VerifyReport",
    "average_precision",
    "classification_metrics",
    "multilabel_metrics",
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


def average_precision(
    labels: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> float | None:
    """Average precision (AP) of one class: the area under its precision-recall curve.

    ``AP = sum_n (R_n - R_{n-1}) * P_n`` over the distinct scores from high to low, with
    ``P_n`` and ``R_n`` the precision and recall of predicting "present" at or above the
    n-th score and ``R_0 = 0``; tied scores form one threshold. No interpolation: the
    definition of scikit-learn's ``average_precision_score`` (Zhu 2004, "Recall,
    Precision and Average Precision").

    Args:
        labels: ``(n,)`` 1 (present) or 0 (absent); values >= 0.5 count as present.
        scores: ``(n,)`` scores, higher meaning more likely present (probabilities).

    Returns:
        AP in [0, 1], or None when no label is present (recall is 0/0; scikit-learn
        warns and returns 0 there).

    Raises:
        InvalidValueError: ``labels`` and ``scores`` differ in length.
    """
    present = np.asarray(labels, dtype=np.float64).reshape(-1) >= 0.5
    score = np.asarray(scores, dtype=np.float64).reshape(-1)
    if present.shape != score.shape:
        raise InvalidValueError(
            f"labels and scores differ in length: {present.size} vs {score.size}."
        )
    if not present.any():
        return None
    order = np.argsort(-score, kind="stable")
    score, present = score[order], present[order]
    last = np.r_[np.flatnonzero(np.diff(score)), score.size - 1]  # end of each tie group
    hits = np.cumsum(present)[last]
    precision = hits / (last + 1)
    recall = hits / hits[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def multilabel_metrics(
    labels: np.ndarray,
    probabilities: np.ndarray,
    class_names: Sequence[str],
    threshold: float,
) -> dict[str, Any]:
    """Multi-label metrics: mAP, and F1 (micro and macro) at the decision threshold.

    A class is predicted present when its probability is strictly above ``threshold``
    (as the export's ``class_ids``). mAP is the macro mean of the per-class
    :func:`average_precision` over the classes present at least once in ``labels``; a
    class never present has AP None and stays out of the mean (scikit-learn would count
    it as 0). Per-class F1 is ``2 TP / (2 TP + FP + FN)``, None when a class is neither
    present nor predicted; macro F1 averages the defined ones, micro F1 pools the counts.

    Args:
        labels: multi-hot ``(n, num_classes)``, 1 where the class is present.
        probabilities: sigmoid outputs ``(n, num_classes)``.
        class_names: one name per class.
        threshold: the decision threshold, a probability in (0, 1).

    Returns:
        ``{"mAP", "f1_micro", "f1_macro", "exact_match", "threshold", "images",
        "per_class": [{"class", "ap", "precision", "recall", "f1", "support"}]}``;
        ``exact_match`` is the share of images whose whole set of classes is right,
        ``support`` the images the class is present in.

    Raises:
        InvalidValueError: shapes that differ or do not fit the class names, or a
            threshold outside (0, 1); every problem at once.
    """
    truth = np.asarray(labels, dtype=np.float64) >= 0.5
    scores = np.asarray(probabilities, dtype=np.float64)
    k = len(class_names)
    problems = []
    if truth.shape != scores.shape:
        problems.append(f"labels {truth.shape} and probabilities {scores.shape} differ in shape")
    if scores.ndim != 2 or scores.shape[-1] != k:
        problems.append(f"probabilities {scores.shape} are not (images, {k}) for {k} classes")
    if not 0 < threshold < 1:
        problems.append(f"threshold {threshold!r} is not a probability in (0, 1)")
    if problems:
        raise InvalidValueError("Cannot compute multi-label metrics: " + "; ".join(problems) + ".")
    predicted = scores > threshold
    tp = (predicted & truth).sum(axis=0)
    fp = (predicted & ~truth).sum(axis=0)
    fn = (~predicted & truth).sum(axis=0)
    per_class = [
        {
            "class": str(name),
            "ap": average_precision(truth[:, i], scores[:, i]),
            "precision": _ratio(tp[i], tp[i] + fp[i]),
            "recall": _ratio(tp[i], tp[i] + fn[i]),
            "f1": _ratio(2 * tp[i], 2 * tp[i] + fp[i] + fn[i]),
            "support": int(truth[:, i].sum()),
        }
        for i, name in enumerate(class_names)
    ]
    return {
        "mAP": _mean([c["ap"] for c in per_class]),
        "f1_micro": _ratio(2 * tp.sum(), 2 * tp.sum() + fp.sum() + fn.sum()),
        "f1_macro": _mean([c["f1"] for c in per_class]),
        "exact_match": float(np.mean(np.all(predicted == truth, axis=1))) if len(truth) else None,
        "threshold": float(threshold),
        "images": int(len(truth)),
        "per_class": per_class,
    }


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator else None


def _mean(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


# ---------------------------------------------------------------------------------------
# The report's types


def _from_fields(cls: type, data: Mapping[str, Any]) -> Any:
    """``cls(**data)`` with the keys ``cls`` has (older reports may lack newer ones)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class CacheReport:
    """What the activation cache did in one stage, in the report's words.

    Attributes:
        used: the stage trained on cached activations.
        reason: why not, or a short description of the cut when used.
        where: ``"memory"`` or the on-disk directory; None when unused.
        where_reason: why the cache lives there.
        bytes: bytes of the stored activations (train + validation); None when unused.
        shape: activation shape per example ``(h', w', channels)``.
        dtype: storage dtype (anything but float32 is approximate; ``exact`` says so).
        exact: False when stored in a reduced precision.
        cut: the block whose end is the cut; cut_layer: the layer whose output is cached.
        build_seconds: seconds spent computing or loading the activations.
        reused: the activations came from an earlier stage or run.
        derived_from: the lower block whose activations these were computed from.
        seconds_saved: seconds the cache saved this stage, or None when unknown.
        seconds_saved_is_estimate: ``seconds_saved`` is the estimate
            ``pass_seconds * epochs - build_seconds`` (see :meth:`from_cache_info`).
    """

    used: bool = False
    reason: str = ""
    where: str | None = None
    where_reason: str = ""
    bytes: int | None = None
    shape: list[int] | None = None
    dtype: str | None = None
    exact: bool = True
    cut: str | None = None
    cut_layer: str | None = None
    build_seconds: float = 0.0
    reused: bool = False
    derived_from: str | None = None
    seconds_saved: float | None = None
    seconds_saved_is_estimate: bool = False

    @classmethod
    def from_cache_info(cls, info: Any, epochs: int) -> CacheReport:
        """The report of a ``zoo`` ``CacheInfo`` for a stage that trained ``epochs`` epochs.

        Without the cache every epoch would run the frozen prefix over the training and
        validation images again; with it the stage spends ``build_seconds`` once (a
        full pass, a pass derived from the next stage's activations, or nothing when
        reused). So the saving is about ``pass_seconds * epochs - build_seconds``: an
        estimate from the prefix's cost per pass as measured when the activations were
        computed. A cache loaded from disk has no measured pass, so no estimate.
        """
        saved = None
        if info.used and info.pass_seconds:
            saved = max(0.0, info.pass_seconds * epochs - info.build_seconds)
        return cls(
            used=info.used,
            reason=info.reason,
            where=info.location,
            where_reason=info.location_reason,
            bytes=info.size_bytes if info.used else None,
            shape=list(info.shape) if info.shape else None,
            dtype=info.dtype,
            exact=info.exact,
            cut=info.cut,
            cut_layer=info.cut_layer,
            build_seconds=info.build_seconds,
            reused=info.reused,
            derived_from=info.derived_from,
            seconds_saved=saved,
            seconds_saved_is_estimate=saved is not None,
        )

    def text(self) -> str:
        """One line for the Markdown stage table."""
        if not self.used:
            return f"not used: {self.reason or 'no reason given'}"
        details = [self.where or "?"]
        if self.bytes is not None:
            details.append(_size(self.bytes))
        if self.seconds_saved is not None:
            about = "~" if self.seconds_saved_is_estimate else ""
            details.append(f"saved {about}{self.seconds_saved:.0f} s")
        if self.reused:
            details.append("reused")
        if self.derived_from:
            details.append(f"derived from the {self.derived_from} activations")
        reason = f"{self.reason} " if self.reason else ""
        return f"{reason}({', '.join(details)})"


@dataclass(frozen=True)
class StageReport:
    """One fine-tuning stage as run.

    Attributes:
        name: the stage's name.
        policy: the freezing policy in recipe words, every field it uses
            (``recipes.config.StageConfig.policy_config``), e.g. ``{"policy":
            "unfreeze_top", "blocks": 2, "fraction": None, "batchnorm": "frozen",
            "lr_decay": None}``.
        epochs_run: epochs trained (all of them, across a resume).
        stopped_early: early stopping ended the stage.
        resumed_at_epoch: the epoch this session started the stage at.
        history: Keras' ``History.history``: metric -> one value per epoch.
        seconds: wall time of ``fit`` in this session.
        images_per_second: training images per second of ``seconds``.
        cache: see :class:`CacheReport`.
        trainable_variables: variables the optimizer trained.
        monitor: the metric that picked the best epoch (``val_loss``, ``val_accuracy``...).
        best_epoch, best_value: the epoch (1-based) with the best ``monitor``, and its value.
        kept_epoch: the epoch whose weights the stage ended with; kept_reason: why.
        ema: the moving average's momentum, or None.
        without_ema: validation metrics of the last epoch's raw weights when ``ema`` is
            set (the history's ``val_`` values are the averaged weights').
    """

    name: str
    policy: dict[str, Any]
    epochs_run: int = 0
    stopped_early: bool = False
    resumed_at_epoch: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    images_per_second: float = 0.0
    cache: CacheReport = field(default_factory=CacheReport)
    trainable_variables: int = 0
    monitor: str = "val_loss"
    best_epoch: int | None = None
    best_value: float | None = None
    kept_epoch: int | None = None
    kept_reason: str = ""
    ema: float | None = None
    without_ema: dict[str, float] | None = None

    @classmethod
    def from_result(cls, policy: Mapping[str, Any], result: Any) -> StageReport:
        """The report of a ``zoo.StageResult`` trained under ``policy`` (recipe words)."""
        return cls(
            name=result.name,
            policy=dict(policy),
            epochs_run=result.epochs_run,
            stopped_early=result.stopped_early,
            resumed_at_epoch=result.resumed_at_epoch,
            history={k: [float(v) for v in vs] for k, vs in result.history.items()},
            seconds=result.train_seconds,
            images_per_second=result.images_per_second,
            cache=CacheReport.from_cache_info(
                result.cache, result.epochs_run - result.resumed_at_epoch
            ),
            trainable_variables=len(result.trainable_paths),
            monitor=result.monitor,
            best_epoch=result.best_epoch,
            best_value=result.best_value,
            kept_epoch=result.kept_epoch,
            kept_reason=result.kept_reason,
            ema=result.ema,
            without_ema=result.without_ema,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StageReport:
        data = dict(data)
        policy = data.pop("policy")
        cache = _from_fields(CacheReport, data.pop("cache", None) or {})
        if isinstance(policy, str):  # reports before the policy config was stored
            policy = {"policy": policy}
        return _from_fields(cls, {**data, "policy": policy, "cache": cache})

    def policy_text(self) -> str:
        """``unfreeze_top (blocks=2, batchnorm=frozen)``: the name and the fields set."""
        fields = [f"{k}={v}" for k, v in self.policy.items() if k != "policy" and v is not None]
        name = str(self.policy.get("policy", "?"))
        return f"{name} ({', '.join(fields)})" if fields else name


@dataclass(frozen=True)
class VerifyReport:
    """The export's verification (``recipes.verify.VerifyResult``), or why there is none.

    Attributes:
        passed: every check passed; None when verification did not run.
        failures: one line per failed check.
        checks: ``{"name", "passed", "detail"}`` per check, in order.
        num_variables, num_frozen: variables in the export, and how many are frozen.
        max_abs_diff: the largest logit difference between export and Keras model.
        note: why verification did not run (``"not run"``), else empty.
    """

    passed: bool | None = None
    failures: list[str] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    num_variables: int | None = None
    num_frozen: int | None = None
    max_abs_diff: float | None = None
    note: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> VerifyReport:
        """From the runner's verification dict; empty or None: not run."""
        if not data:
            return cls(note="not run")
        return _from_fields(cls, data)


@dataclass(frozen=True)
class DataReport:
    """The images the run used.

    Attributes:
        source: ``[data].source`` as written in the recipe.
        train_images, validation_images, test_images: examples per split (None: no
            such split).
        skipped: ``{"path", "reason"}`` per file that could not be read.
        test_fraction: the share of the training images held out as the test split;
            None when the source's own test split was used (or there is none).
        test_split: where the test split came from, in words.
    """

    source: str
    train_images: int | None = None
    validation_images: int | None = None
    test_images: int | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)
    test_fraction: float | None = None
    test_split: str = ""


@dataclass(frozen=True)
class SettingsReport:
    """Mixed precision and XLA: what the recipe asked and what ``fine_tune`` chose.

    Attributes:
        mixed_precision_asked, jit_compile_asked: ``[run]`` as written (``"auto"`` lets
            ``fine_tune`` probe the candidates on this device).
        mixed_precision: the policy used (``None`` for float32); jit_compile: XLA used.
        probe: ``FineTuneResult.settings_probe`` (each candidate's seconds per step and
            loss, and the choice) when a setting was ``"auto"``; None otherwise.
        distribute_asked: ``[run] distribute`` as written.
        strategy: the ``tf.distribute`` strategy used (class name), or ``"none"``.
        replicas: replicas in sync (1: one device); workers: processes in the cluster.
        global_batch: images per training step over all replicas (``[data] batch_size``);
            per_replica_batch: each replica's share. Learning rates are not rescaled.
        logical_cpu_devices: ``[run] logical_cpu_devices`` (a testing aid), or None.
    """

    mixed_precision_asked: str = "off"
    jit_compile_asked: bool | str = False
    mixed_precision: str | None = None
    jit_compile: bool = False
    probe: dict[str, Any] | None = None
    distribute_asked: str = "none"
    strategy: str = "none"
    replicas: int = 1
    workers: int = 1
    global_batch: int | None = None
    per_replica_batch: int | None = None
    logical_cpu_devices: int | None = None


@dataclass(frozen=True)
class RunReport:
    """Everything ``report.json`` holds; :meth:`to_dict` is its JSON form.

    Attributes:
        recipe, description: the recipe's name and description.
        evaluated_on: ``"test"`` or ``"validation"``: the split of the final evaluation.
        top1: top-1 accuracy on that split (JSON key ``<split>_top1``); None for a
            multi-label run.
        evaluation: :func:`classification_metrics` on that split (JSON key ``<split>``),
            or :func:`multilabel_metrics` for a multi-label run.
        wall_seconds: the whole run, seconds.
        verify: see :class:`VerifyReport`.
        backbone, weights: the classifier's backbone and its weights
            (``zoo.classifier_info``: ``{"source", "sha256"}``).
        input_shape: ``(height, width, 3)``.
        class_names: one per class, in label order.
        stages: one :class:`StageReport` per stage.
        data: see :class:`DataReport`; settings: see :class:`SettingsReport`.
        export: the verified export's directory, or None.
        timings: step name -> seconds.
        resumed: the run continued an interrupted one.
        environment: Python, Keras, backend, machine, CPUs.
        metric: the headline metric, a key of ``evaluation``: ``"top1"``, or ``"mAP"``
            for a multi-label run (JSON key ``<split>_mAP`` instead of ``<split>_top1``).
        deployment: one ``recipes.deploy.DeployResult.to_dict()`` per deployed format
            (size, parity, top-1 and its drop from float, batch-1 ms, images/s).
    """

    recipe: str
    description: str
    evaluated_on: str
    top1: float | None
    evaluation: dict[str, Any]
    wall_seconds: float
    verify: VerifyReport
    backbone: str | None
    weights: dict[str, Any] | str | None
    input_shape: list[int]
    class_names: list[str]
    stages: list[StageReport]
    data: DataReport
    settings: SettingsReport = field(default_factory=SettingsReport)
    export: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    resumed: bool = False
    environment: dict[str, Any] = field(default_factory=dict)
    metric: str = "top1"
    deployment: list[dict[str, Any]] = field(default_factory=list)

    @property
    def headline(self) -> str:
        """The headline's name: ``"test top-1"``, ``"validation top-1"``, ``"test mAP"``."""
        return f"{self.evaluated_on} {'top-1' if self.metric == 'top1' else self.metric}"

    @property
    def score(self) -> float | None:
        """The headline's value: :attr:`top1`, or ``evaluation[metric]``."""
        return self.top1 if self.metric == "top1" else self.evaluation.get(self.metric)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able dict written to ``report.json``."""
        split = self.evaluated_on
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("evaluated_on", "top1", "evaluation", "metric"):
            del fields[name]
        ordered = {
            "recipe": fields.pop("recipe"),
            "description": fields.pop("description"),
            f"{split}_{self.metric}": self.score,
            "evaluated_on": split,
            **fields,
            split: self.evaluation,
        }
        return jsonable(ordered)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunReport:
        """A report read back from ``report.json`` (the inverse of :meth:`to_dict`)."""
        data = dict(data)
        split = data.pop("evaluated_on", "test")
        metric = "mAP" if f"{split}_mAP" in data else "top1"
        return cls(
            **{
                **{k: v for k, v in data.items() if k in {f.name for f in dataclasses.fields(cls)}},
                "evaluated_on": split,
                "metric": metric,
                "top1": data.get(f"{split}_top1"),
                "evaluation": data.get(split) or {},
                "verify": _from_fields(VerifyReport, data.get("verify") or {}),
                "stages": [StageReport.from_dict(s) for s in data.get("stages", [])],
                "data": _from_fields(DataReport, data["data"]),
                "settings": _from_fields(SettingsReport, data.get("settings") or {}),
            }
        )


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
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


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
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------
# Markdown


def _last(history: Mapping[str, Sequence[float]], key: str | None) -> float | None:
    values = history.get(key, []) if key else []
    return float(values[-1]) if values else None


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def render_markdown(report: RunReport, plots: Mapping[str, str]) -> str:
    """The report as Markdown: results first, then settings, stages, classes, verification.

    Args:
        report: the run's report.
        plots: plot name -> path relative to the report (``"training_curves"``,
            ``"confusion_matrix"``).
    """
    lines = [f"# {report.recipe}", ""]
    if report.description:
        lines += [report.description, ""]
    lines += _result_section(report)
    if "training_curves" in plots:
        lines += [f"![training curves]({plots['training_curves']})", ""]
    lines += _settings_section(report.settings)
    lines += _stages_section(report.stages)
    lines += _per_class_section(report)
    if "confusion_matrix" in plots:
        lines += [f"![confusion matrix]({plots['confusion_matrix']})", ""]
    lines += _verify_section(report.verify)
    lines += _deployment_section(report.deployment)
    lines += _data_section(report.data)
    if report.timings:
        lines += ["", "## Timings", ""]
        lines += markdown_table(
            ["step", "seconds"], [[k, f"{v:.1f}"] for k, v in report.timings.items()]
        )
    lines.append("")
    return "\n".join(lines)


def _per_class_section(report: RunReport) -> list[str]:
    """Per-class precision and recall; for a multi-label run also AP and F1."""
    per_class = report.evaluation.get("per_class")
    if not per_class:
        return []
    lines = [f"## {report.evaluated_on.capitalize()} set, per class", ""]
    if report.metric != "mAP":
        lines += markdown_table(
            ["class", "precision", "recall", "images"],
            [[c["class"], c["precision"], c["recall"], c["support"]] for c in per_class],
        )
        return [*lines, ""]
    ev = report.evaluation
    lines += [
        f"mAP {format_cell(ev.get('mAP'))} (mean of the classes' AP); at threshold "
        f"{ev.get('threshold')}: F1 micro {format_cell(ev.get('f1_micro'))}, macro "
        f"{format_cell(ev.get('f1_macro'))}, exact match {format_cell(ev.get('exact_match'))}.",
        "",
    ]
    lines += markdown_table(
        ["class", "AP", "precision", "recall", "F1", "images with it"],
        [
            [c["class"], c["ap"], c["precision"], c["recall"], c["f1"], c["support"]]
            for c in per_class
        ],
    )
    return [*lines, ""]


def _result_section(report: RunReport) -> list[str]:
    split = report.evaluated_on
    verified = {True: "yes", False: "**NO**"}.get(report.verify.passed, "not run")
    lines = ["## Result", ""]
    lines += markdown_table(
        [report.headline, f"{split} images", "backbone", "input", "wall time", "verified"],
        [
            [
                report.score,
                report.evaluation.get("images"),
                report.backbone,
                "x".join(str(v) for v in report.input_shape[:2]) or "-",
                f"{report.wall_seconds:.0f} s",
                verified,
            ]
        ],
    )
    if split != "test":
        lines += [
            "",
            f"Evaluated on the {split} split, as the recipe asked ([data] evaluate_on): "
            "it guided training (early stopping), so this is not a held-out test result.",
        ]
    return [*lines, ""]


def _settings_section(settings: SettingsReport) -> list[str]:
    """Mixed precision and XLA as chosen; the probe's times when ``"auto"`` chose them."""
    lines = ["## Settings", ""]
    lines += markdown_table(
        ["setting", "asked", "used"],
        [
            [
                "mixed precision",
                settings.mixed_precision_asked,
                settings.mixed_precision or "float32",
            ],
            ["XLA (jit_compile)", settings.jit_compile_asked, settings.jit_compile],
            [
                "distribute",
                settings.distribute_asked,
                f"{settings.strategy}, {settings.replicas} replica(s) on "
                f"{settings.workers} worker(s)",
            ],
            [
                "batch (global / per replica)",
                settings.global_batch,
                f"{settings.global_batch} / {settings.per_replica_batch}",
            ],
        ],
    )
    lines.append("")
    if settings.replicas > 1:
        lines += ["Learning rates are as written, not rescaled for the replicas.", ""]
    if settings.logical_cpu_devices:
        lines += [
            f"The CPU was split into {settings.logical_cpu_devices} logical devices (a "
            "testing aid: they share the same cores, so this measures overhead, not speed).",
            "",
        ]
    probe = settings.probe or {}
    for key, value in probe.items():
        rows = value if isinstance(value, list) else None
        if rows and all(isinstance(r, Mapping) for r in rows):
            header = list(dict.fromkeys(k for r in rows for k in r))
            lines += [f"probe {key}:", ""]
            lines += markdown_table(header, [[r.get(k) for k in header] for r in rows])
            lines.append("")
        else:
            lines.append(f"- probe {key}: {format_cell(value, 4)}")
    if probe:
        lines.append("")
    return lines


def _stages_section(stages: Sequence[StageReport]) -> list[str]:
    rows = []
    for stage in stages:
        acc = _accuracy_key(stage.history)
        rows.append(
            [
                stage.name,
                stage.policy_text(),
                len(stage.history.get("loss", [])),
                _last(stage.history, acc),
                _last(stage.history, f"val_{acc}" if acc else None),
                f"{stage.seconds:.1f}",
                format_cell(stage.images_per_second, 1),
                stage.cache.text(),
            ]
        )
    header = ["stage", "policy", "epochs", "train acc", "val acc", "seconds", "images/s", "cache"]
    lines = ["## Stages", "", *markdown_table(header, rows), ""]
    kept = [f"- {s.name}: {s.kept_reason}" for s in stages if s.kept_reason]
    if kept:
        lines += ["Weights each stage ended with:", "", *kept, ""]
    lines += _ema_lines(stages)
    return lines


def _ema_lines(stages: Sequence[StageReport]) -> list[str]:
    """Validation with the moving average of the weights beside the raw weights."""
    rows = []
    for stage in stages:
        if stage.ema is None or not stage.without_ema:
            continue
        acc = _accuracy_key(stage.history)
        key = f"val_{acc}" if acc else "val_loss"
        rows.append(
            [
                stage.name,
                stage.ema,
                key,
                _last(stage.history, key),
                stage.without_ema.get(key),
            ]
        )
    if not rows:
        return []
    header = ["stage", "EMA momentum", "metric", "last epoch, EMA", "last epoch, raw weights"]
    return [
        "Moving average of the weights (EMA), on validation:",
        "",
        *markdown_table(header, rows),
        "",
    ]


def _verify_section(verify: VerifyReport) -> list[str]:
    lines = ["## Verification", ""]
    if verify.passed is None:
        lines.append(verify.note or "not run")
    else:
        lines.append(f"passed: {'yes' if verify.passed else 'no'}")
        lines += [f"- {failure}" for failure in verify.failures]
    return [*lines, ""]


def _deployment_section(deployment: list[dict[str, Any]]) -> list[str]:
    if not deployment:
        return []
    header = ["format", "file", "MB", "parity", "top-1", "drop", "batch-1 ms", "images/s"]
    rows = [
        [
            d["format"],
            d["file"],
            f"{d['bytes'] / 1e6:.2f}",
            f"{d['parity']:.3g}" + (" agree" if d["format"] == "tflite-int8" else ""),
            d.get("top1"),
            d.get("top1_drop"),
            f"{d['latency_ms']:.2f}",
            f"{d['images_per_s']:.0f} (batch {d['batch']})",
        ]
        for d in deployment
    ]
    return ["## Deployment", "", *markdown_table(header, rows), ""]


def _data_section(data: DataReport) -> list[str]:
    skipped = data.skipped
    lines = ["## Data", ""]
    lines += markdown_table(
        ["source", "train", "validation", "test", "skipped files"],
        [
            [
                data.source,
                data.train_images,
                data.validation_images,
                data.test_images,
                len(skipped),
            ]
        ],
    )
    if data.test_split:
        lines.append(f"- test split: {data.test_split}")
    lines += [f"- skipped `{s['path']}`: {s['reason']}" for s in skipped[:20]]
    if len(skipped) > 20:
        lines.append(f"- ... and {len(skipped) - 20} more (report.json lists them all)")
    return lines


def write_report(report: RunReport, run_dir: str | os.PathLike) -> dict[str, Path]:
    """Writes ``report.json``, ``plots/*.png`` and ``report.md`` into ``run_dir``.

    Args:
        report: the run's report; ``report.json`` is ``report.to_dict()``.
        run_dir: the run directory.

    Returns:
        ``{"json", "markdown", "training_curves", "confusion_matrix"}`` -> written paths
        (the plots only when there is something to plot).
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
    relative = {k: p.relative_to(run_dir).as_posix() for k, p in written.items()}
    written["json"] = run_dir / "report.json"
    write_text_atomic(written["json"], json.dumps(report.to_dict(), indent=2) + "\n")
    written["markdown"] = run_dir / "report.md"
    write_text_atomic(written["markdown"], render_markdown(report, relative))
    return written
