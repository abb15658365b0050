"""The report's numbers from labels and model outputs, computed by scikit-learn.

:func:`classification_metrics` (top-1, top-5, balanced accuracy, per-class precision and
recall, the confusion matrix), :func:`multilabel_metrics` (mAP, F1) and
:func:`average_precision` wrap ``sklearn.metrics`` with zoo's conventions: a value that is
0/0 is None (never a silent 0), and bad input is one :class:`zoo.errors.InvalidValueError`
listing every problem. :func:`error_analysis` finds what a user looks at when the model is
wrong: the images with the highest loss and the most-confused pairs of classes.
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
    "classification_metrics",
    "error_analysis",
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
