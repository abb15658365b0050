"""What a fine-tuning run is made of and what it returns: Stage, StageResult, FineTuneResult.

Plain dataclasses, validated on creation (every problem listed at once).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from zoo.caching import CACHE_DTYPES, CacheInfo
from zoo.errors import InvalidValueError
from zoo.policies import OPTIMIZERS as _OPTIMIZER_CLASSES

OPTIMIZERS = tuple(_OPTIMIZER_CLASSES)  # names defined once, in zoo.policies
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class Stage:
    """One stage of fine-tuning.

    Attributes:
        name: used in logs, file names and the result.
        policy: a ``zoo.policies`` policy (``FreezeBackbone()``, ``UnfreezeTop(...)``,
            ``FullFineTune(...)``); anything with ``apply(model)``.
        epochs: number of epochs, >= 1.
        learning_rate: peak learning rate, > 0.
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (built by
            ``zoo.policies.make_optimizer``, honouring per-block multipliers).
        weight_decay: decoupled weight decay passed to the optimizer, or None.
        schedule: ``"constant"`` or ``"cosine"`` (decays to 0 at the end of the stage).
        warmup_epochs: linear warmup from 0, in epochs (may be fractional).
        label_smoothing: in [0, 1); labels become one-hot when > 0.
        early_stopping_patience: stop after this many epochs without a better ``monitor``
            value (its training counterpart without validation data); None disables it.
        class_weight: ``{class index: weight}`` for the loss, or None.
        monitor: the validation metric that picks the best epoch and drives early
            stopping: ``"val_loss"`` (lower is better) or another ``val_`` metric the stage
            compiles, such as ``"val_accuracy"`` or ``"val_pr_auc"`` (higher is better).
        restore_best: with validation data, end the stage with the weights of its best
            ``monitor`` epoch (the trainable variables and the moving statistics of
            trainable BatchNorm layers; frozen variables are never written). False keeps
            the last epoch's. Without validation data the last epoch is always kept.
        ema: keep an exponential moving average of the trained weights with this momentum,
            in (0, 1) (Keras' optimizer ``use_ema`` / ``ema_momentum``; timm's
            ``--model-ema``), or None. Validation, the restored best epoch and the stage's
            final weights are the averaged ones.
        augment: a ``zoo.data.Augmentation`` (``zoo.data.augmentation([...])``: MixUp and
            CutMix mix the labels with the images' weights, label smoothing composes), a
            Keras layer applied to training images only (``training=True``), or None.
            Augmentation rules out caching; evaluation never sees it.
        cache: ``"auto"`` (cache when valid) or ``"off"``.
        cache_dtype: ``"float32"`` (exact), ``"bfloat16"`` or ``"float16"`` (half the
            memory, approximate; the result says so).
        frozen_inference: frozen Dropout / stochastic-depth / noise layers run in inference
            mode, as frozen BatchNorm does (Keras would leave them active). Default True.
    """

    name: str
    policy: Any
    epochs: int
    learning_rate: float
    optimizer: str = "adam"
    weight_decay: float | None = None
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    early_stopping_patience: int | None = None
    class_weight: dict[int, float] | None = None
    augment: Any = None
    cache: str = "auto"
    cache_dtype: str = "float32"
    frozen_inference: bool = True
    monitor: str = "val_loss"
    restore_best: bool = True
    ema: float | None = None

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.epochs, int) or self.epochs < 1:
            problems.append(f"epochs must be an integer >= 1, got {self.epochs!r}")
        if not (isinstance(self.learning_rate, int | float) and self.learning_rate > 0):
            problems.append(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            problems.append(f"warmup_epochs must be in [0, epochs], got {self.warmup_epochs!r}")
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            problems.append(
                f"early_stopping_patience must be >= 1 or None, got {self.early_stopping_patience!r}"
            )
        if self.cache not in ("auto", "off"):
            problems.append(f"cache must be 'auto' or 'off', got {self.cache!r}")
        if self.cache_dtype not in CACHE_DTYPES:
            problems.append(f"cache_dtype must be one of {CACHE_DTYPES}, got {self.cache_dtype!r}")
        if not (isinstance(self.monitor, str) and self.monitor.startswith("val_")):
            problems.append(
                f"monitor must name a validation metric such as 'val_loss' or "
                f"'val_accuracy', got {self.monitor!r}"
            )
        if self.ema is not None and not (
            isinstance(self.ema, int | float)
            and not isinstance(self.ema, bool)
            and 0 < self.ema < 1
        ):
            problems.append(f"ema must be a momentum in (0, 1) or None, got {self.ema!r}")
        if not hasattr(self.policy, "apply"):
            problems.append(f"policy must have an apply(model) method, got {self.policy!r}")
        if problems:
            raise InvalidValueError(f"Invalid Stage {self.name!r}: " + "; ".join(problems) + ".")


@dataclass
class StageResult:
    """What one stage did.

    Attributes:
        name, index: the stage.
        epochs_run: epochs trained in this stage (all of them, across a resume).
        stopped_early: early stopping ended the stage.
        history: per-epoch metrics, ``{"loss": [...], "accuracy": [...], "val_loss": ...}``.
        train_seconds: wall time of ``fit`` (without building the cache), this session.
        images_per_second: training images per second of ``train_seconds``.
        cache: the :class:`zoo.caching.CacheInfo`.
        trainable_paths: paths of the variables the compiled optimizer trains.
        frozen_inference_layers: frozen stochastic layers switched to inference mode.
        resumed_at_epoch: the epoch this session started the stage at (0 unless resumed).
        monitor: the metric that picked the best epoch (``Stage.monitor``; its training
            counterpart, e.g. ``"loss"``, without validation data).
        best_epoch: the epoch (1-based) with the best ``monitor`` value, or None.
        best_value: that value, or None.
        kept_epoch: the epoch (1-based) whose weights the stage ended with (0: none ran).
        kept_reason: why those weights, in words.
        ema: the moving average's momentum, or None.
        without_ema: with ``ema`` and validation data, the validation metrics of the last
            epoch's raw (not averaged) weights, ``{"val_loss": ..., "val_accuracy": ...}``;
            the history's last ``val_`` values are the averaged weights'.
    """

    name: str
    index: int
    epochs_run: int = 0
    stopped_early: bool = False
    history: dict[str, list[float]] = field(default_factory=dict)
    train_seconds: float = 0.0
    images_per_second: float = 0.0
    cache: CacheInfo = field(default_factory=CacheInfo)
    trainable_paths: list[str] = field(default_factory=list)
    frozen_inference_layers: list[str] = field(default_factory=list)
    resumed_at_epoch: int = 0
    monitor: str = "val_loss"
    best_epoch: int | None = None
    best_value: float | None = None
    kept_epoch: int = 0
    kept_reason: str = ""
    ema: float | None = None
    without_ema: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the fields."""
        d = asdict(self)
        d["cache"] = self.cache.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageResult:
        """The inverse of :meth:`to_dict`."""
        d = dict(d)
        return cls(cache=CacheInfo.from_dict(d.pop("cache")), **d)


@dataclass
class FineTuneResult:
    """The outcome of :func:`fine_tune`.

    Attributes:
        stages: one :class:`StageResult` per stage.
        frozen_in_all_stages: manifest paths (``zoo.fingerprint``) frozen in every stage.
        wall_seconds: total wall time of this call.
        mixed_precision, jit_compile: the settings used.
        run_dir: where logs and checkpoints went, or None.
        resumed: this call resumed from a checkpoint.
        settings_probe: with ``mixed_precision`` or ``jit_compile`` ``"auto"``, what was
            chosen and why, and each candidate's seconds per step and loss
            (``zoo.training.settings.SettingsProbe.to_dict()``); None otherwise.
        distribution: how training was distributed
            (``zoo.training.distribute.DistributionInfo.to_dict()``: strategy, replicas,
            workers, devices, chief); one device reads ``strategy="none"``, ``replicas=1``.
    """

    stages: list[StageResult]
    frozen_in_all_stages: set[str]
    wall_seconds: float
    mixed_precision: str | None = None
    jit_compile: bool = False
    run_dir: str | None = None
    resumed: bool = False
    settings_probe: dict[str, Any] | None = None
    distribution: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (``frozen_in_all_stages`` as a sorted list)."""
        return {
            "stages": [s.to_dict() for s in self.stages],
            "frozen_in_all_stages": sorted(self.frozen_in_all_stages),
            "wall_seconds": self.wall_seconds,
            "mixed_precision": self.mixed_precision,
            "jit_compile": self.jit_compile,
            "run_dir": self.run_dir,
            "resumed": self.resumed,
            "settings_probe": self.settings_probe,
            "distribution": self.distribution,
        }
