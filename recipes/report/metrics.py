"""The report's numbers from labels and model outputs, computed by scikit-learn.

:func:`classification_metrics` (top-1, top-5, balanced accuracy, per-class precision and
recall, the confusion matrix), :func:`multilabel_metrics` (mAP, F1) and
:func:`average_precision` wrap ``sklearn.metrics`` with zoo's conventions: a value that is
0/0 is None (never a silent 0), and bad input is one :class:`zoo.errors.InvalidValueError`
listing every problem. :func:`error_analysis` finds what a user looks at when the model is
wrong: the images with the highest loss and the most-confused pairs of classes.
:func:`calibration` fits a temperature (Guo et al. 2017) and measures the expected
calibration error before and after.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from zoo.errors import InvalidValueError

__all__ = [
    "TOP_LOSSES",
    "average_precision",
    "calibration",
    "classification_metrics",
    "error_analysis",
    "expected_calibration_error",
    "fit_temperature",
    "log_softmax",
    "multilabel_metrics",
]

# How many of the highest-loss images the report lists (the grid shows the first ones).
TOP_LOSSES = 100


def _none(value: Any) -> float | None:
    """A float, or None where scikit-learn gave NaN (a 0/0)."""
    value = float(value)
    return None if math.isnan(value) else value


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """``log(softmax(logits))`` over the last axis in float64, without overflow."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def classification_metrics(
    labels: Sequence[int] | np.ndarray,
    predictions: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
    logits: np.ndarray | None = None,
) -> dict[str, Any]:
    """Top-1 (and top-5) accuracy, balanced accuracy, per-class precision and recall, and
    the confusion matrix (``sklearn.metrics``).

    Args:
        labels: true class indices, shape ``(n,)``.
        predictions: predicted class indices (argmax of the logits), shape ``(n,)``.
        class_names: one name per class; ``len(class_names)`` is the number of classes.
        logits: the model's logits ``(n, classes)``, for top-5 (any scores that rank the
            classes will do); None leaves ``top5`` out.

    Returns:
        ``{"top1", "top5", "balanced_accuracy", "images", "per_class": [{"class",
        "precision", "recall", "support"}], "confusion_matrix"}``; ``confusion_matrix[i][j]``
        counts images of true class ``i`` predicted as ``j``. Balanced accuracy is the
        mean recall over the classes present (Brodersen et al. 2010; scikit-learn's
        ``balanced_accuracy_score``). A class never predicted has precision ``None`` (0/0),
        one never present recall ``None``. ``top5`` is None with five classes or fewer
        (every image would count as right).

    Raises:
        InvalidValueError: different lengths, a class index outside
            ``range(len(class_names))``, or logits of another shape.
    """
    from sklearn.metrics import (
        balanced_accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
        top_k_accuracy_score,
    )

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
    if logits is not None and np.shape(logits) != (y_true.size, k):
        raise InvalidValueError(
            f"logits {np.shape(logits)} are not (images, classes) = ({y_true.size}, {k})."
        )
    classes = np.arange(k)
    matrix = confusion_matrix(y_true, y_pred, labels=classes)
    precision, recall, _, support = precision_recall_fscore_support(
        y_true, y_pred, labels=classes, zero_division=np.nan
    )
    per_class = [
        {
            "class": str(name),
            "precision": _none(precision[i]),
            "recall": _none(recall[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    ]
    top5 = None
    if logits is not None and y_true.size and k > 5:
        top5 = float(top_k_accuracy_score(y_true, np.asarray(logits), k=5, labels=classes))
    balanced = None
    if y_true.size:
        with warnings.catch_warnings():  # a class predicted but never present is no error
            warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
            balanced = float(balanced_accuracy_score(y_true, y_pred))
    return {
        "top1": float(np.mean(y_true == y_pred)) if y_true.size else None,
        "top5": top5,
        "balanced_accuracy": balanced,
        "images": int(y_true.size),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }


def error_analysis(
    labels: np.ndarray,
    logits: np.ndarray,
    class_names: Sequence[str],
    identities: Sequence[str] | None = None,
    top: int = TOP_LOSSES,
    pairs: int = 10,
) -> dict[str, Any]:
    """The images the model is most wrong about, and the classes it mixes up most.

    An image's loss is its cross-entropy ``-log softmax(logits)[true class]``; sorting by
    it puts confidently wrong predictions first, which is how mislabelled images are found
    (fastai's ``plot_top_losses``).

    Args:
        labels: true class indices ``(n,)``.
        logits: ``(n, classes)``.
        class_names: one name per class.
        identities: each image's identity in the same order (a folder's relative paths,
            an index), or None.
        top: how many of the highest-loss images to list.
        pairs: how many most-confused pairs to list.

    Returns:
        ``{"top_losses": [{"index", "identity", "true", "predicted", "probability",
        "true_probability", "loss"}], "most_confused": [{"true", "predicted", "count",
        "share"}]}``; ``index`` is the image's position in the split, ``probability`` the
        predicted class's, ``share`` the fraction of the true class's images.

    Raises:
        InvalidValueError: shapes that do not fit one another.
    """
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    logp = log_softmax(logits)
    k = len(class_names)
    if logp.shape != (y.size, k) or (identities is not None and len(identities) != y.size):
        raise InvalidValueError(
            f"error_analysis: labels ({y.size},), logits {logp.shape} and "
            f"{'no' if identities is None else len(identities)} identities do not fit "
            f"{k} classes."
        )
    losses = -logp[np.arange(y.size), y]
    predicted = logp.argmax(axis=-1)
    order = np.argsort(-losses, kind="stable")[:top]
    top_losses = [
        {
            "index": int(i),
            "identity": None if identities is None else str(identities[i]),
            "true": str(class_names[y[i]]),
            "predicted": str(class_names[predicted[i]]),
            "probability": float(np.exp(logp[i, predicted[i]])),
            "true_probability": float(np.exp(logp[i, y[i]])),
            "loss": float(losses[i]),
        }
        for i in order
    ]
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(y, predicted, labels=np.arange(k))
    rows = matrix.sum(axis=1)
    off = [(int(matrix[i, j]), i, j) for i in range(k) for j in range(k) if i != j and matrix[i, j]]
    off.sort(key=lambda t: (-t[0], t[1], t[2]))
    most_confused = [
        {
            "true": str(class_names[i]),
            "predicted": str(class_names[j]),
            "count": count,
            "share": float(count / rows[i]),
        }
        for count, i, j in off[:pairs]
    ]
    return {"top_losses": top_losses, "most_confused": most_confused}


def average_precision(
    labels: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> float | None:
    """Average precision (AP) of one class: the area under its precision-recall curve.

    ``AP = sum_n (R_n - R_{n-1}) * P_n`` over the distinct scores from high to low, with
    ``P_n`` and ``R_n`` the precision and recall of predicting "present" at or above the
    n-th score and ``R_0 = 0``; tied scores form one threshold. No interpolation:
    scikit-learn's ``average_precision_score`` (Zhu 2004, "Recall, Precision and Average
    Precision").

    Args:
        labels: ``(n,)`` 1 (present) or 0 (absent); values >= 0.5 count as present.
        scores: ``(n,)`` scores, higher meaning more likely present (probabilities).

    Returns:
        AP in [0, 1], or None when no label is present (recall is 0/0; scikit-learn
        warns and returns 0 there).

    Raises:
        InvalidValueError: ``labels`` and ``scores`` differ in length.
    """
    from sklearn.metrics import average_precision_score

    present = np.asarray(labels, dtype=np.float64).reshape(-1) >= 0.5
    score = np.asarray(scores, dtype=np.float64).reshape(-1)
    if present.shape != score.shape:
        raise InvalidValueError(
            f"labels and scores differ in length: {present.size} vs {score.size}."
        )
    if not present.any():
        return None
    return float(average_precision_score(present, score))


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
    present nor predicted; macro F1 averages the defined ones, micro F1 pools the counts
    (``sklearn.metrics.precision_recall_fscore_support``, ``f1_score``).

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
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

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
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, average=None, zero_division=np.nan
    )
    per_class = [
        {
            "class": str(name),
            "ap": average_precision(truth[:, i], scores[:, i]),
            "precision": _none(precision[i]),
            "recall": _none(recall[i]),
            "f1": _none(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    ]
    return {
        "mAP": _mean([c["ap"] for c in per_class]),
        "f1_micro": _none(f1_score(truth, predicted, average="micro", zero_division=np.nan)),
        "f1_macro": _mean([c["f1"] for c in per_class]),
        "exact_match": float(accuracy_score(truth, predicted)) if len(truth) else None,
        "threshold": float(threshold),
        "images": int(len(truth)),
        "per_class": per_class,
    }


def _mean(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def expected_calibration_error(
    labels: np.ndarray, probabilities: np.ndarray, bins: int = 15
) -> float | None:
    """Expected calibration error of the top-1 predictions (Guo et al. 2017, "On
    Calibration of Modern Neural Networks", eq. 3).

    The images are binned by their top probability (``bins`` equal-width bins of (0, 1],
    a bin holding ``lower < p <= upper``); ECE is the images-weighted mean of
    ``|accuracy - mean confidence|`` over the bins.

    Args:
        labels: true class indices ``(n,)``.
        probabilities: ``(n, classes)`` softmax outputs.
        bins: number of bins (15 as in Guo et al.).

    Returns:
        ECE in [0, 1], or None for no images.
    """
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    p = np.asarray(probabilities, dtype=np.float64)
    if not y.size:
        return None
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    gap = np.abs(
        np.bincount(which, weights=correct, minlength=bins)
        - np.bincount(which, weights=confidence, minlength=bins)
    )
    return float(gap.sum() / counts.sum())


def fit_temperature(labels: np.ndarray, logits: np.ndarray) -> float:
    """The temperature ``T`` that minimises the negative log-likelihood of
    ``softmax(logits / T)`` (temperature scaling, Guo et al. 2017), searched in
    [0.05, 20] on a log scale (``scipy.optimize.minimize_scalar``).

    Args:
        labels: true class indices ``(n,)``.
        logits: ``(n, classes)``.

    Returns:
        ``T > 0``: above 1 softens over-confident probabilities, below 1 sharpens them.
        The ranking of the classes, so top-1, is the same for every ``T``.
    """
    from scipy.optimize import minimize_scalar

    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    z = np.asarray(logits, dtype=np.float64)

    def nll(log_t: float) -> float:
        return float(-log_softmax(z / np.exp(log_t))[np.arange(y.size), y].mean())

    found = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(found.x))


def calibration(
    fit_labels: np.ndarray,
    fit_logits: np.ndarray,
    labels: np.ndarray,
    logits: np.ndarray,
    bins: int = 15,
) -> dict[str, Any]:
    """Temperature scaling fitted on one split and measured on another.

    Args:
        fit_labels, fit_logits: the split the temperature is fitted on (validation).
        labels, logits: the split it is measured on (test): ``(n,)`` and ``(n, classes)``.
        bins: ECE bins.

    Returns:
        ``{"temperature", "bins", "ece_before", "ece_after", "nll_before", "nll_after",
        "reliability": {"before"|"after": {"confidence": [...], "accuracy": [...]}}}``:
        the reliability curve is the mean confidence and the accuracy of each non-empty
        bin (``sklearn.calibration.calibration_curve`` on "the top-1 prediction is right").
    """
    from sklearn.calibration import calibration_curve

    temperature = fit_temperature(fit_labels, fit_logits)
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    out: dict[str, Any] = {"temperature": temperature, "bins": bins, "reliability": {}}
    for name, t in (("before", 1.0), ("after", temperature)):
        logp = log_softmax(np.asarray(logits, dtype=np.float64) / t)
        p = np.exp(logp)
        out[f"ece_{name}"] = expected_calibration_error(y, p, bins)
        out[f"nll_{name}"] = float(-logp[np.arange(y.size), y].mean()) if y.size else None
        correct = (p.argmax(axis=1) == y).astype(int)
        accuracy, confidence = calibration_curve(
            correct, p.max(axis=1), n_bins=bins, strategy="uniform"
        )
        out["reliability"][name] = {
            "confidence": [float(v) for v in confidence],
            "accuracy": [float(v) for v in accuracy],
        }
    return out
