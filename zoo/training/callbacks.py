"""Keras callbacks of the stage loop: history kept across a resume, the best epoch (early
stopping and the weights to restore, checkpointed), validation on the weights' moving
average, and the per-epoch checkpoint."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from zoo.errors import InvalidValueError
from zoo.training.checkpoint import CheckpointState, save_checkpoint
from zoo.training.distribute import assign_in_place

log = logging.getLogger("zoo.training")


class History(keras.callbacks.Callback):
    """Appends each epoch's logs to a dict of lists (kept across a resume)."""

    def __init__(self, history: dict[str, list[float]]) -> None:
        super().__init__()
        self.history = history

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(float(v))


class BestEpoch(keras.callbacks.Callback):
    """Tracks the best epoch of ``monitor``: early stopping, and the weights to restore.

    Lower is better for a metric whose name ends in ``loss``, higher for any other
    (accuracy, ``pr_auc``). After every epoch that improves on the best, ``snapshot()`` is
    called and its result kept in :attr:`weights` (the loop passes a copy of the variables
    the stage can change). ``patience`` epochs without improvement stop the stage;
    ``patience=None`` never stops. The state (``best``, ``best_epoch``, ``wait``,
    ``stopped`` and the weights) is checkpointed, so a resumed stage carries on with it.

    Args:
        monitor: a key of Keras' epoch logs (``"val_loss"``, ``"val_accuracy"``, ``"loss"``).
        patience: epochs without improvement before stopping, or None.
        snapshot: returns the weights worth keeping, ``{path: array}``; None keeps none.

    Raises:
        InvalidValueError: (at the first epoch's end) ``monitor`` is not in the logs.
    """

    def __init__(
        self,
        monitor: str,
        patience: int | None,
        snapshot: Callable[[], dict[str, np.ndarray]] | None = None,
    ) -> None:
        super().__init__()
        self.monitor, self.patience, self.snapshot = monitor, patience, snapshot
        self.lower_is_better = monitor.endswith("loss")
        self.best = math.inf if self.lower_is_better else -math.inf
        self.best_epoch: int | None = None
        self.wait = 0
        self.stopped = False
        self.weights: dict[str, np.ndarray] | None = None

    def improved(self, value: float) -> bool:
        """``value`` beats the best so far (NaN never does)."""
        if math.isnan(value):
            return False
        return value < self.best if self.lower_is_better else value > self.best

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        if self.monitor not in logs:
            raise InvalidValueError(
                f"monitor {self.monitor!r} is not one of the stage's metrics "
                f"{sorted(logs)}; set the stage's monitor to one of them."
            )
        value = float(logs[self.monitor])
        if self.improved(value):
            self.best, self.best_epoch, self.wait = value, epoch + 1, 0
            if self.snapshot is not None:
                self.weights = self.snapshot()
            return
        self.wait += 1
        if self.patience is not None and self.wait >= self.patience:
            self.stopped = True
            self.model.stop_training = True
            log.info("Early stopping at epoch %d: %s did not improve", epoch + 1, self.monitor)


def averaged_pairs(optimizer: Any) -> list[tuple[Any, Any]]:
    """``(model variable, its moving average)`` of an optimizer built with ``use_ema``.

    Empty when the optimizer keeps no average. A ``LossScaleOptimizer``'s inner optimizer
    holds the averages. Keras keeps them beside the variables it trains, in the same
    order (``keras.optimizers.Optimizer``: ``_trainable_variables``,
    ``_model_variables_moving_average``).
    """
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if not getattr(inner, "use_ema", False):
        return []
    averages = getattr(inner, "_model_variables_moving_average", None) or []
    return [
        (v, a) for v, a in zip(inner._trainable_variables, averages, strict=True) if a is not None
    ]


class AveragedValidation(keras.callbacks.Callback):
    """Validates with the moving average of the weights, then puts the raw ones back.

    Keras' optimizer EMA writes the averages into the model only when ``fit`` ends
    (``finalize_variable_values``), so its validation during ``fit`` would see the raw
    weights. This swaps the averages in for each validation pass (``on_test_begin``) and
    the raw values back afterwards (``on_test_end``), bit for bit; :attr:`raw` keeps the
    last raw values, ``{id(variable): array}``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.raw: dict[int, np.ndarray] = {}

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        pairs = averaged_pairs(self.model.optimizer)
        self.raw = {id(v): np.array(v) for v, _ in pairs}
        for v, average in pairs:
            # A copy: on JAX an assigned array can share the average's buffer, which the
            # evaluation step then donates (deletes).
            assign_in_place(v, np.array(average))

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        for v, _ in averaged_pairs(self.model.optimizer):
            assign_in_place(v, self.raw[id(v)])


class Checkpoint(keras.callbacks.Callback):
    """Writes ``checkpoints/last.npz`` (:mod:`zoo.training.checkpoint`) after every epoch.

    Args:
        run_dir: the run directory.
        model: the full model, whose variables are saved (``fit`` may run on its suffix,
            whose variables are the full model's own).
        stage_state: the state at the start of the stage; each epoch adds the epoch
            count, the history and the best epoch's state (and its weights).
        history: the stage's history, as :class:`History` fills it.
        early: the stage's :class:`BestEpoch`.
    """

    def __init__(
        self,
        run_dir: Path,
        model: keras.Model,
        stage_state: CheckpointState,
        history: dict[str, list[float]],
        early: BestEpoch,
    ) -> None:
        super().__init__()
        self.run_dir, self.full_model, self.stage_state = run_dir, model, stage_state
        self.history, self.early = history, early

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        state = dataclasses.replace(
            self.stage_state,
            epoch=epoch + 1,
            history=self.history,
            best=self.early.best,
            wait=self.early.wait,
            stopped=self.early.stopped,
            best_epoch=self.early.best_epoch,
        )
        save_checkpoint(
            self.run_dir, state, self.full_model, self.model.optimizer, best=self.early.weights
        )
