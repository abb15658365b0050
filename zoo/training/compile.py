"""What a stage compiles with: its loss and metrics, optimizer and learning-rate schedule."""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from zoo.errors import ZooError
from zoo.policies import make_optimizer
from zoo.training.stages import Stage


def with_label_augmentation(model: keras.Model, stage: Stage) -> Stage:
    """``stage`` with its ``zoo.data.Augmentation`` told the classes and label smoothing.

    MixUp / CutMix mix one-hot labels with the images' weights, and label smoothing
    happens before the mixing (``zoo.data.augment``), so such a stage trains on soft
    labels; see :func:`loss_and_metrics`. Multi-hot labels are mixed unsmoothed: the
    binary cross-entropy smooths them itself (toward 1/2, not 1/classes). Other stages
    come back unchanged.
    """
    if stage.augment is None:  # zoo.data (TensorFlow) is imported only when augmenting
        return stage
    from zoo.data.augment import Augmentation

    if not isinstance(stage.augment, Augmentation):
        return stage
    smoothing = 0.0 if _multi_label(model) else stage.label_smoothing
    augment = stage.augment.replace(
        num_classes=int(model.outputs[0].shape[-1]), label_smoothing=smoothing
    )
    return dataclasses.replace(stage, augment=augment)


def soft_label_augmentation(stage: Stage) -> Any:
    """The stage's augmentation when it turns labels into ``(batch, classes)`` probabilities."""
    return stage.augment if getattr(stage.augment, "soft_labels", False) else None


def loss_and_metrics(model: keras.Model, stage: Stage) -> tuple[Any, list[Any], Any]:
    """Loss from logits, accuracy metric, and a label transform (one-hot) if needed.

    With a label-mixing augmentation (:func:`with_label_augmentation`) the training labels
    arrive as smoothed, mixed probabilities: categorical cross-entropy with no smoothing
    of its own, and validation labels one-hot (unsmoothed) by the augmentation. The
    label transform takes numpy batches (any backend) or tensors inside a ``tf.data`` map.
    """
    num_classes = int(model.outputs[0].shape[-1])
    multi = _multi_label(model)
    mixing = soft_label_augmentation(stage)
    if mixing is not None and not multi:
        loss = keras.losses.CategoricalCrossentropy(from_logits=True)
        return loss, [keras.metrics.CategoricalAccuracy(name="accuracy")], mixing.evaluation_labels
    if multi:
        loss = keras.losses.BinaryCrossentropy(
            from_logits=True, label_smoothing=stage.label_smoothing
        )
        return loss, _multi_label_metrics(num_classes), None
    if stage.label_smoothing > 0:
        loss = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=stage.label_smoothing
        )

        def one_hot(x: Any, y: Any) -> Any:
            if isinstance(y, np.ndarray):
                return x, np.eye(num_classes, dtype=np.float32)[y.reshape(-1).astype(np.int64)]
            import tensorflow as tf

            return x, tf.one_hot(tf.cast(tf.reshape(y, [-1]), tf.int32), num_classes)

        return loss, [keras.metrics.CategoricalAccuracy(name="accuracy")], one_hot
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return loss, [keras.metrics.SparseCategoricalAccuracy(name="accuracy")], None


def _multi_label_metrics(num_classes: int) -> list[Any]:
    """Per-label accuracy at probability 0.5 (logit 0) and ``pr_auc``, a per-epoch mAP.

    ``pr_auc`` is Keras' area under each class's precision-recall curve (200 thresholds,
    interpolated; Davis & Goadrich 2006) averaged over the classes: an estimate of the
    mean average precision that ``recipes.report.multilabel_metrics`` computes exactly.
    """
    return [
        keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0),
        keras.metrics.AUC(
            curve="PR", multi_label=True, num_labels=num_classes, from_logits=True, name="pr_auc"
        ),
    ]


def _multi_label(model: keras.Model) -> bool:
    from zoo.classifier import classifier_info

    try:
        return bool(classifier_info(model).get("multi_label", False))
    except ZooError:  # not made by zoo.build_classifier: a bare model is single-label
        return False


def stage_optimizer(stage: Stage, model: keras.Model, steps: int, mixed: str | None) -> Any:
    """The stage's optimizer (``zoo.policies.make_optimizer``); loss-scaled under float16.

    With ``stage.ema`` the optimizer keeps a moving average of the weights it trains
    (``use_ema=True, ema_momentum=stage.ema``); ``fit`` writes it into the model at the end.
    """
    lr = _learning_rate(stage, steps)
    kwargs: dict[str, Any] = {}
    if stage.weight_decay is not None:
        kwargs["weight_decay"] = stage.weight_decay
    if stage.ema is not None:  # Keras' optimizer EMA: averages kept beside the variables
        kwargs.update(use_ema=True, ema_momentum=float(stage.ema))
    opt = make_optimizer(stage.optimizer, lr, model, stage.policy, **kwargs)
    if mixed == "float16" and not isinstance(opt, keras.optimizers.LossScaleOptimizer):
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


def _learning_rate(stage: Stage, steps_per_epoch: int) -> Any:
    """A float, or Keras' CosineDecay (with linear warmup; alpha=1 keeps it constant)."""
    warmup = int(round(stage.warmup_epochs * steps_per_epoch))
    if stage.schedule == "constant" and warmup == 0:
        return float(stage.learning_rate)
    total = max(stage.epochs * steps_per_epoch - warmup, 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else float(stage.learning_rate),
        decay_steps=total,
        alpha=1.0 if stage.schedule == "constant" else 0.0,
        warmup_target=float(stage.learning_rate) if warmup else None,
        warmup_steps=warmup,
    )
