"""The report's types: :class:`RunReport` and its parts, and their one JSON conversion.

The runner fills one :class:`RunReport` (with a :class:`StageReport` per stage, each with
its :class:`CacheReport`, plus :class:`DataReport`, :class:`SettingsReport` and
:class:`VerifyReport`). ``RunReport.to_dict`` / ``from_dict`` are the one JSON conversion.

The headline number is named after the split it was measured on: ``test_top1`` when
the run evaluated on a held-out test split, ``validation_top1`` when the recipe asked
for ``[data] evaluate_on = "validation"``. Validation drove early stopping and the choice
of each stage's best epoch, so its number is never called "test". A multi-label run's
headline is the mean average precision (``test_mAP``) instead of top-1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from recipes.text import jsonable

__all__ = [
    "CacheReport",
    "DataReport",
    "RunReport",
    "SettingsReport",
    "StageReport",
    "VerifyReport",
    "accuracy_key",
    "size_text",
]


def accuracy_key(history: Mapping[str, Sequence[float]]) -> str | None:
    """The training accuracy's key in a Keras history (``"accuracy"``), or None."""
    keys = [k for k in history if not k.startswith("val_") and "acc" in k]
    return keys[0] if keys else None


def size_text(n: float) -> str:
    """Bytes in words: ``"512 B"``, ``"1.5 MiB"``."""
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


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
        engine: the inference engine that computed the activations and its probe (each
            candidate's seconds per batch and relative error against TensorFlow as
            built), ``zoo.caching.engine.EngineChoice.to_dict``; None when unknown.
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
    engine: dict[str, Any] | None = None

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
            engine=getattr(info, "engine", None),
        )

    def text(self) -> str:
        """One line for the Markdown stage table."""
        if not self.used:
            return f"not used: {self.reason or 'no reason given'}"
        details = [self.where or "?"]
        if self.bytes is not None:
            details.append(size_text(self.bytes))
        if self.seconds_saved is not None:
            about = "~" if self.seconds_saved_is_estimate else ""
            details.append(f"saved {about}{self.seconds_saved:.0f} s")
        if self.reused:
            details.append("reused")
        if self.derived_from:
            details.append(f"derived from the {self.derived_from} activations")
        if self.engine:
            details.append(f"on {self.engine.get('engine')}")
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
        trainable_params: scalars in them; total_params: scalars in every weight of the
            model (with ``policy = "lora"``, the adapters are a small share of it).
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
    trainable_params: int = 0
    total_params: int = 0
    monitor: str = "val_loss"
    best_epoch: int | None = None
    best_value: float | None = None
    kept_epoch: int | None = None
    kept_reason: str = ""
    ema: float | None = None
    without_ema: dict[str, float] | None = None

    @classmethod
    def from_result(
        cls, policy: Mapping[str, Any], result: Any, sizes: Mapping[str, int] | None = None
    ) -> StageReport:
        """The report of a ``zoo.StageResult`` trained under ``policy`` (recipe words).

        ``sizes``: the model's weights, Keras variable path -> number of scalars, for
        :attr:`trainable_params` and :attr:`total_params` (0 without it).
        """
        sizes = sizes or {}
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
            trainable_params=sum(sizes.get(p, 0) for p in result.trainable_paths),
            total_params=sum(sizes.values()),
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

    def trainable_text(self) -> str:
        """``"1.02% (228,098 of 22,286,594)"``: trainable parameters as a share of the model."""
        if not self.total_params:
            return "-"
        share = 100 * self.trainable_params / self.total_params
        return f"{share:.3g}% ({self.trainable_params:,} of {self.total_params:,})"

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
        inference_engine_asked: ``[run] inference_engine`` as written.
        evaluation_engine: the engine the evaluation ran on and its probe
            (``zoo.caching.engine.EngineChoice.to_dict``); the caches' engines are in
            each stage's :class:`CacheReport`.
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
    inference_engine_asked: str = "auto"
    evaluation_engine: dict[str, Any] | None = None


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
