"""Multi-stage fine-tuning with frozen-prefix activation caching and exact resume.

* :mod:`zoo.training.stages`: :class:`Stage`, :class:`StageResult`, :class:`FineTuneResult`;
* :mod:`zoo.training.loop`: :func:`fine_tune`, the stage loop around Keras ``fit``;
* :mod:`zoo.training.compile`: a stage's loss, metrics, optimizer and schedule;
* :mod:`zoo.training.settings`: mixed precision and XLA, given or probed (``"auto"``);
* :mod:`zoo.training.distribute`: ``tf.distribute`` strategies (``distribution=``);
* :mod:`zoo.training.checkpoint`: :class:`CheckpointState` and its atomic file;
* :mod:`zoo.training.callbacks`: history, early stopping, the per-epoch checkpoint.

The cache itself (where to cut, storage, data) is :mod:`zoo.caching`.
"""

from zoo.caching import CacheInfo
from zoo.training.checkpoint import CHECKPOINT_NAME, CheckpointState
from zoo.training.distribute import (
    DISTRIBUTIONS,
    DistributionError,
    DistributionInfo,
    configure_logical_cpus,
    make_strategy,
    unreplicated,
)
from zoo.training.loop import fine_tune
from zoo.training.settings import MIXED_PRECISION, Candidate, SettingsProbe
from zoo.training.stages import OPTIMIZERS, SCHEDULES, FineTuneResult, Stage, StageResult

__all__ = [
    "CHECKPOINT_NAME",
    "DISTRIBUTIONS",
    "MIXED_PRECISION",
    "OPTIMIZERS",
    "SCHEDULES",
    "CacheInfo",
    "Candidate",
    "CheckpointState",
    "DistributionError",
    "DistributionInfo",
    "FineTuneResult",
    "SettingsProbe",
    "Stage",
    "StageResult",
    "configure_logical_cpus",
    "fine_tune",
    "make_strategy",
    "unreplicated",
]
