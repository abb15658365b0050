"""The learning-rate range test: a stage's loss as its learning rate grows exponentially.

:func:`lr_find` trains one :class:`~zoo.training.stages.Stage` for a few steps while the
learning rate rises from ``start_lr`` to ``end_lr`` on a log scale, records each step's
loss, and suggests the rate where the smoothed loss falls fastest (the "steepest" point of
fastai's ``lr_find``; Smith 2017, "Cyclical Learning Rates for Training Neural Networks").
Every variable of the model is put back afterwards, bit for bit, so the test leaves the
model as it found it.

The stage trains the plain way (no activation cache) with its policy, optimizer, weight
decay and per-block learning-rate multipliers; its schedule is replaced by the test's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from zoo.caching import apply_policy
from zoo.caching.plan import stochastic_frozen_layers_off
from zoo.errors import InvalidValueError
from zoo.training.compile import loss_and_metrics, stage_optimizer, with_label_augmentation
from zoo.training.distribute import assign_in_place
from zoo.training.stages import Stage

__all__ = ["LRFindResult", "lr_find", "steepest"]


@dataclass
class LRFindResult:
    """What :func:`lr_find` measured.

    Attributes:
        learning_rates: the rate of each step (the head's; blocks with a multiplier train
            at that multiple).
        losses: each step's training loss.
        smoothed: the losses smoothed (exponential moving average, debiased, beta 0.98).
        suggestion: the rate where the smoothed loss falls fastest (:func:`steepest`), or
            None when the test was too short to tell.
        stopped_early: the loss exceeded ``diverge`` times its best and the test stopped.
    """

    learning_rates: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    suggestion: float | None = None
    stopped_early: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the fields."""
        return dict(vars(self))


def steepest(learning_rates: list[float], smoothed: list[float]) -> float | None:
    """The rate at which the smoothed loss falls fastest per log-step of the rate.

    The last few points before a divergence dominate a plain minimum of the slope, so the
    search stops at the smoothed minimum (fastai's ``steep`` suggestion does the same).

    Returns:
        A learning rate, or None with fewer than 3 points before the minimum.
    """
    if len(smoothed) < 3:
        return None
    end = int(np.argmin(smoothed)) + 1
    if end < 3:
        return None
    slopes = np.gradient(np.asarray(smoothed[:end]), np.log(np.asarray(learning_rates[:end])))
    return float(learning_rates[int(np.argmin(slopes))])


class _RangeTest(keras.callbacks.Callback):
    """Sets each step's rate and records the step's own loss (Keras logs a running mean)."""

    def __init__(self, rates: np.ndarray, diverge: float, result: LRFindResult) -> None:
        super().__init__()
        self.rates, self.diverge, self.result = rates, diverge, result
        self.mean, self.avg, self.best = 0.0, 0.0, math.inf

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.model.optimizer.learning_rate.assign(float(self.rates[batch]))

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        mean = float((logs or {}).get("loss", math.nan))
        loss = (batch + 1) * mean - batch * self.mean  # this step's loss from the running mean
        self.mean = mean
        self.avg = 0.98 * self.avg + 0.02 * loss
        smooth = self.avg / (1 - 0.98 ** (batch + 1))
        r = self.result
        r.learning_rates.append(float(self.rates[batch]))
        r.losses.append(loss)
        r.smoothed.append(smooth)
        self.best = min(self.best, smooth)
        if not math.isfinite(loss) or smooth > self.diverge * self.best:
            r.stopped_early = True
            self.model.stop_training = True


def lr_find(
    model: keras.Model,
    train: Any,
    stage: Stage,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    diverge: float = 4.0,
    verbose: int = 0,
) -> LRFindResult:
    """Runs the learning-rate range test for ``stage`` on ``model``; restores the model.

    Args:
        model: a classifier from ``zoo.build_classifier``, as the stages before this one
            left it.
        train: a batched ``tf.data.Dataset`` of ``(pixels 0..255, labels)``, repeated as
            needed (each step takes one batch).
        stage: the stage to test; its policy, optimizer, weight decay, label smoothing,
            augmentation and per-block multipliers are used, its learning rate and
            schedule are not.
        start_lr, end_lr: the first and last rate, ``0 < start_lr < end_lr``.
        steps: steps from ``start_lr`` to ``end_lr`` (rates spaced evenly in log).
        diverge: stop once the smoothed loss exceeds this many times its minimum.
        verbose: Keras verbosity.

    Returns:
        An :class:`LRFindResult` with the rates, losses and the suggestion.

    Raises:
        InvalidValueError: bad rates, steps or ``diverge``.
    """
    problems = []
    if not 0 < start_lr < end_lr:
        problems.append(f"need 0 < start_lr < end_lr, got {start_lr!r} and {end_lr!r}")
    if not (isinstance(steps, int) and steps >= 5):
        problems.append(f"steps must be an integer >= 5, got {steps!r}")
    if not diverge > 1:
        problems.append(f"diverge must be > 1, got {diverge!r}")
    if problems:
        raise InvalidValueError("lr_find: " + "; ".join(problems) + ".")
    saved = [np.array(v) for v in model.variables]
    result = LRFindResult()
    rates = np.geomspace(start_lr, end_lr, steps)
    stage = with_label_augmentation(model, stage)
    try:
        apply_policy(model, stage.policy)
        with stochastic_frozen_layers_off(model, stage.frozen_inference):
            loss, metrics, to_labels = loss_and_metrics(model, stage)
            fixed = Stage(
                stage.name,
                stage.policy,
                1,
                float(start_lr),
                optimizer=stage.optimizer,
                weight_decay=stage.weight_decay,
            )
            optimizer = stage_optimizer(fixed, model, steps, None)
            model.compile(optimizer, loss, metrics=metrics)
            data = train.repeat()
            augment = stage.augment
            if getattr(augment, "soft_labels", False):  # mixes (or smooths) labels too
                data = data.map(augment)
            elif augment is not None:
                data = data.map(lambda x, y: (augment(x, training=True), y))
            if to_labels is not None:
                data = data.map(to_labels)
            model.fit(
                data,
                epochs=1,
                steps_per_epoch=steps,
                callbacks=[_RangeTest(rates, diverge, result)],
                shuffle=False,  # the dataset decides
                verbose=verbose,
            )
    finally:
        for v, value in zip(model.variables, saved, strict=True):
            assign_in_place(v, value)
    result.suggestion = steepest(result.learning_rates, result.smoothed)
    return result
