"""Keras callbacks of the stage loop: history kept across a resume, early stopping whose
state is checkpointed, and the per-epoch checkpoint."""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import keras

from zoo.training.checkpoint import CheckpointState, save_checkpoint

log = logging.getLogger("zoo.training")


class History(keras.callbacks.Callback):
    """Appends each epoch's logs to a dict of lists (kept across a resume)."""

    def __init__(self, history: dict[str, list[float]]) -> None:
        super().__init__()
        self.history = history

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(float(v))


class EarlyStopping(keras.callbacks.Callback):
    """Stops after ``patience`` epochs without a lower loss; its state is checkpointed.

    Monitors ``val_loss`` with validation data, else ``loss``; ``patience=None`` never stops.
    """

    def __init__(self, patience: int | None, has_validation: bool) -> None:
        super().__init__()
        self.patience = patience
        self.monitor = "val_loss" if has_validation else "loss"
        self.best = math.inf
        self.wait = 0
        self.stopped = False

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.patience is None:
            return
        value = float((logs or {}).get(self.monitor, math.inf))
        if value < self.best:
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped = True
            self.model.stop_training = True
            log.info("Early stopping at epoch %d: %s did not improve", epoch + 1, self.monitor)


class Checkpoint(keras.callbacks.Callback):
    """Writes ``checkpoints/last.npz`` (:mod:`zoo.training.checkpoint`) after every epoch.

    Args:
        run_dir: the run directory.
        model: the full model, whose variables are saved (``fit`` may run on its suffix,
            whose variables are the full model's own).
        stage_state: the state at the start of the stage; each epoch adds the epoch
            count, the history and early stopping's state.
        history: the stage's history, as :class:`History` fills it.
        early: the stage's early stopping.
    """

    def __init__(
        self,
        run_dir: Path,
        model: keras.Model,
        stage_state: CheckpointState,
        history: dict[str, list[float]],
        early: EarlyStopping,
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
        )
        save_checkpoint(self.run_dir, state, self.full_model, self.model.optimizer)
