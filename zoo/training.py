"""Multi-stage fine-tuning with frozen-prefix activation caching and exact resume.

``fine_tune(model, train, validation, stages)`` runs :class:`Stage` s in order. Each stage
applies its freezing policy (``zoo.policies``), recompiles, and trains with the options
users expect: Adam / AdamW / SGD, constant or cosine learning rate with linear warmup,
label smoothing, class weights, early stopping, mixed precision, XLA, Keras progress bars,
TensorBoard and CSV logs, and a checkpoint every epoch from which ``resume=True`` carries
on after a crash (even ``kill -9``).

Where a stage leaves the bottom of the backbone frozen, it trains only the top on
activations cached once (:mod:`zoo.caching`): at the backbone's output this is the
classic head-only feature cache, at a lower block boundary the frozen-prefix cache of a
top-blocks fine-tune. The trained layers are the full model's own, so nothing needs
copying back.

Imports TensorFlow (tf.data, determinism) inside functions only.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from zoo import caching
from zoo.caching import CacheInfo, CacheUnavailable
from zoo.errors import InvalidValueError
from zoo.fingerprint import frozen_paths

log = logging.getLogger("zoo.training")

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")
MIXED_PRECISION = {"bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
CHECKPOINT_NAME = "last.npz"
SHARED_CACHE_DIR = "shared-cache"  # in run_dir: activations two stages share, until the end


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
        early_stopping_patience: stop after this many epochs without a better validation
            loss (training loss without validation data); None disables it.
        class_weight: ``{class index: weight}`` for the loss, or None.
        augment: a Keras layer applied to training batches only (``training=True``), or
            None. Augmentation rules out caching.
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
        if self.cache_dtype not in caching.CACHE_DTYPES:
            problems.append(
                f"cache_dtype must be one of {caching.CACHE_DTYPES}, got {self.cache_dtype!r}"
            )
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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the fields."""
        d = asdict(self)
        d["cache"] = self.cache.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageResult:
        d = dict(d)
        cache = dict(d.pop("cache"))
        cache["shape"] = tuple(cache["shape"]) if cache.get("shape") else None
        return cls(cache=CacheInfo(**cache), **d)


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
    """

    stages: list[StageResult]
    frozen_in_all_stages: set[str]
    wall_seconds: float
    mixed_precision: str | None = None
    jit_compile: bool = False
    run_dir: str | None = None
    resumed: bool = False

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
        }


# ----------------------------------------------------------------------------- fine_tune


def fine_tune(
    model: keras.Model,
    train: Any,
    validation: Any,
    stages: Sequence[Stage],
    *,
    run_dir: str | os.PathLike | None = None,
    mixed_precision: str | None = None,
    jit_compile: bool = False,
    resume: bool = False,
    cache_dir: str | os.PathLike | None = None,
    cache_budget_bytes: int = caching.DEFAULT_CACHE_BUDGET_BYTES,
    data_fingerprint: str | None = None,
    shuffle_cache: bool = True,
    cache_batch_size: int | None = None,
    seed: int = 0,
    verbose: int = 1,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> FineTuneResult:
    """Fine-tunes ``model`` stage by stage, caching frozen activations where valid.

    Each stage applies its policy, builds its optimizer with
    ``zoo.policies.make_optimizer``, compiles (sparse categorical cross-entropy from
    logits, or categorical with label smoothing; binary for multi-label classifiers) and
    trains. When everything up to a block boundary is frozen (see
    :func:`zoo.caching.plan_cut`), the stage has no augmentation and ``cache="auto"``,
    the prefix runs once in inference mode and only the suffix trains, on the cached
    activations; otherwise the model trains the plain way and the result says why. When
    the next stage will cache lower down (a head stage before a top-blocks fine-tune), a
    stage computes the next one's activations and derives its own from them, so one pass
    over the images serves both.

    Args:
        model: a classifier from ``zoo.build_classifier`` (layers ``preprocess``,
            ``backbone``, ``head``; outputs logits).
        train: batched ``tf.data.Dataset`` of ``(float32 pixels 0..255 (batch, h, w, 3),
            int labels (batch,))``, as ``zoo.data.pipeline`` makes it.
        validation: the same for validation, or None.
        stages: the stages, run in order.
        run_dir: where logs (``logs/<stage>``, ``<index>_<stage>.csv``) and the checkpoint
            (``checkpoints/last.npz``) go; None writes nothing (and cannot resume).
        mixed_precision: ``"bfloat16"``, ``"float16"`` or None (float32). Applied to the
            model's layers for the call, restored afterwards.
        jit_compile: compile training (and the cache's forward pass) with XLA.
        resume: continue from ``run_dir``'s checkpoint: completed stages are skipped and
            the current one carries on from its last complete epoch with the optimizer's
            state. Without a checkpoint, starts from the beginning. Pass ``train`` built
            the same way as in the interrupted run (see "Exact resume" below).
        cache_dir: where over-budget activations are stored (and found again by key);
            default a temporary directory, deleted afterwards.
        cache_budget_bytes: largest activation cache kept in memory.
        data_fingerprint: identity of ``train`` / ``validation`` (``DataSource.fingerprint``)
            for the cache key; without it an on-disk cache is not reused across calls.
        shuffle_cache: reshuffle cached examples every epoch (order a function of seed and
            epoch). False keeps the dataset's batches, e.g. to compare with plain training
            on an unshuffled dataset.
        cache_batch_size: batch size for training on the cache; default the dataset's.
        seed: seed for the cache's shuffling.
        verbose: Keras verbosity (1: progress bars).
        callbacks: extra Keras callbacks. In a cached stage they see the suffix model,
            whose variables are the full model's.

    Exact resume: a training pipeline that reshuffles every iteration (tf.data's
    ``shuffle(..., seed=s, reshuffle_each_iteration=True)``, as ``zoo.data.pipeline``
    makes it) draws iteration k's order from (s, k), k counting the iterations of that
    dataset object in this process. ``fine_tune`` counts its own iterations of ``train``
    (one per plain epoch, one per look at a batch, one per cache build, a skipped one per
    reused cache) in the checkpoint, and a resumed call first iterates ``train`` as often
    (without reading it) as the interrupted one had, so every epoch sees the order it
    would have seen. Cached activations are kept in :func:`zoo.caching.example_keys`
    order, so a cache rebuilt in another process trains on the same batches. With op
    determinism on (``tf.config.experimental.enable_op_determinism``) a resumed run ends
    with the same weights, bit for bit, as one never interrupted; what the caller did with
    ``train`` before the call must be the same in both runs. Activations two stages share
    are kept in ``run_dir/shared-cache`` until the call completes, so a run resumed in the
    later stage trains on the same bits. Random augmentation (``Stage.augment``) is not
    made exact.

    Returns:
        A :class:`FineTuneResult`.

    Raises:
        ValueError: no stages, a bad ``mixed_precision``, ``resume`` without ``run_dir``,
            or a checkpoint written for different stages.
    """
    _check_args(stages, mixed_precision, resume, run_dir)
    start = time.perf_counter()
    run_path = Path(run_dir) if run_dir is not None else None
    state = _load_checkpoint(model, run_path) if resume else None
    if resume and state is not None:
        _check_same_stages(state, stages)
    results = [StageResult.from_dict(d) for d in (state or {}).get("completed", [])]
    frozen_sets = [set(p) for p in (state or {}).get("frozen", [])]
    session = _Session(
        model=model,
        run_path=run_path,
        jit_compile=jit_compile,
        mixed_precision=mixed_precision,
        cache_dir=cache_dir,
        budget=cache_budget_bytes,
        fingerprint=data_fingerprint,
        shuffle=shuffle_cache,
        cache_batch_size=cache_batch_size,
        seed=seed,
        verbose=verbose,
        callbacks=list(callbacks),
        stages=list(stages),
    )
    with _mixed_precision(model, mixed_precision):
        try:
            session.skip_to(train, int((state or {}).get("train_iterations", 0)))
            for index in range(len(results), len(stages)):
                partial = state if state and state["stage"] == index else None
                result, frozen = session.run_stage(
                    index, stages[index], train, validation, partial, results, frozen_sets
                )
                results.append(result)
                frozen_sets.append(frozen)
                session.save(index, 0, results, frozen_sets, {}, finished=True)
        finally:
            session.cleanup()
    if run_path is not None:  # complete: no resume will need the shared activations
        shutil.rmtree(run_path / SHARED_CACHE_DIR, ignore_errors=True)
    return FineTuneResult(
        stages=results,
        frozen_in_all_stages=set.intersection(*frozen_sets) if frozen_sets else set(),
        wall_seconds=time.perf_counter() - start,
        mixed_precision=mixed_precision,
        jit_compile=jit_compile,
        run_dir=str(run_path) if run_path else None,
        resumed=state is not None,
    )


def _check_args(stages: Sequence[Stage], mixed: str | None, resume: bool, run_dir: Any) -> None:
    problems = []
    if not stages:
        problems.append("stages is empty; pass at least one Stage")
    bad = [s for s in stages if not isinstance(s, Stage)]
    if bad:
        problems.append(f"stages must be zoo.training.Stage objects, got {bad[:2]}")
    names = [s.name for s in stages if isinstance(s, Stage)]
    if len(set(names)) != len(names):
        problems.append(f"stage names must be unique, got {names}")
    if mixed not in (None, *MIXED_PRECISION):
        problems.append(f"mixed_precision must be None, 'bfloat16' or 'float16', got {mixed!r}")
    if resume and run_dir is None:
        problems.append("resume=True needs the run_dir of the interrupted run")
    if problems:
        raise InvalidValueError("fine_tune: " + "; ".join(problems) + ".")


# ----------------------------------------------------------------------------- one stage


def _apply_policy(model: keras.Model, policy: Any) -> None:
    """Applies ``policy`` to a fully trainable ``model``, whatever the last one left."""
    for layer in [model, *caching.all_layers(model)]:
        layer.trainable = True
    policy.apply(model)


def _in_memory(acts: Any) -> int:
    """Bytes ``acts`` (Activations or None) hold in memory."""
    return acts.nbytes if acts is not None and acts.location == "memory" else 0


@dataclass
class _CacheTarget:
    """Activations a stage needs: the prefix that computes them, their key, the cut's block."""

    prefix: keras.Model
    key: str
    block: str


@dataclass
class _Session:
    """State shared by the stages of one :func:`fine_tune` call."""

    model: keras.Model
    run_path: Path | None
    jit_compile: bool
    mixed_precision: str | None
    cache_dir: Any
    budget: int
    fingerprint: str | None
    shuffle: bool
    cache_batch_size: int | None
    seed: int
    verbose: int
    callbacks: list[Any]
    stages: list[Stage]
    memory: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    temp_dirs: list[Path] = field(default_factory=list)
    # Iterations of ``train`` since the (first) call began, and where the stage began.
    iterations: int = 0
    stage_start: int = 0

    def look(self, dataset: Any) -> Any:
        """``iter(dataset)``, counted: each new iterator draws the next shuffle order."""
        self.iterations += 1
        return iter(dataset)

    def skip_to(self, dataset: Any, target: int) -> None:
        """Iterates ``dataset`` (without reading it) until ``target`` iterations are made."""
        if target < self.iterations:
            log.warning(
                "Resume cannot be exact: train was iterated %d times, the checkpoint says %d.",
                self.iterations,
                target,
            )
        while self.iterations < target:
            self.look(dataset)

    def run_stage(
        self,
        index: int,
        stage: Stage,
        train: Any,
        validation: Any,
        partial: dict[str, Any] | None,
        done: list[StageResult],
        frozen_sets: list[set[str]],
    ) -> tuple[StageResult, set[str]]:
        model = self.model
        self.stage_start = self.iterations
        _apply_policy(model, stage.policy)
        frozen = frozen_paths(model)
        result = StageResult(name=stage.name, index=index)
        first_epoch = 0
        if partial is not None:
            first_epoch = int(partial["epoch"])
            result.history = partial["history"]
            result.resumed_at_epoch = first_epoch
        with (
            caching.frozen_layers_in_inference(model)
            if stage.frozen_inference
            else contextlib.nullcontext() as off
        ):
            result.frozen_inference_layers = list(off or [])
            fit_model, data, info = self._prepare(index, stage, train, validation)
            result.cache = info
            loss, metrics, to_labels = _loss_and_metrics(model, stage)
            steps = data["steps"]
            optimizer = _make_optimizer(stage, model, steps, self.mixed_precision)
            # The full model is compiled in a cached stage too, so it can be evaluated next.
            for m in {id(model): model, id(fit_model): fit_model}.values():
                m.compile(optimizer, loss, metrics=metrics, jit_compile=self.jit_compile)
            optimizer.build(fit_model.trainable_variables)
            result.trainable_paths = sorted(v.path for v in fit_model.trainable_variables)
            early = _EarlyStopping(stage.early_stopping_patience, validation is not None)
            if partial is not None:
                _restore_optimizer(optimizer, partial.get("optimizer"))
                early.set_state(partial.get("early", {}))
            stopped = bool(partial and partial.get("stopped"))
            if not data["cached"]:
                # Each plain epoch iterates ``train`` once; the resumed one takes up there.
                self.skip_to(train, self.iterations + first_epoch)
            if first_epoch < stage.epochs and not stopped:
                cbs = self._callbacks(index, stage, result, early, done, frozen_sets, partial)
                t0 = time.perf_counter()
                fit_model.fit(
                    data["train"](first_epoch, stage.epochs, to_labels),
                    validation_data=data["validation"](to_labels),
                    epochs=stage.epochs,
                    initial_epoch=first_epoch,
                    steps_per_epoch=steps,
                    class_weight=stage.class_weight,
                    shuffle=False,  # the dataset (or the cache's epoch order) decides
                    callbacks=cbs,
                    verbose=self.verbose,
                )
                result.train_seconds = time.perf_counter() - t0
        result.stopped_early = early.stopped or stopped
        result.epochs_run = len(next(iter(result.history.values()), []))
        if not data["cached"]:
            self.iterations += result.epochs_run - first_epoch  # one iterator an epoch
        images = data["examples"] * (result.epochs_run - first_epoch)
        result.images_per_second = images / result.train_seconds if result.train_seconds else 0.0
        return result, frozen

    # -- data: cached or plain

    def _prepare(
        self, index: int, stage: Stage, train: Any, validation: Any
    ) -> tuple[keras.Model, dict[str, Any], CacheInfo]:
        info = CacheInfo(reason="cache='off' for this stage")
        if stage.cache == "auto":
            try:
                return self._prepare_cached(index, stage, train, validation)
            except CacheUnavailable as err:
                info = CacheInfo(reason=str(err))
        log.warning("Stage %r trains the plain way (no cache): %s", stage.name, info.reason)
        if self.verbose:
            print(f"Stage {stage.name!r}: no activation cache ({info.reason}).")
        return self.model, _plain_data(train, validation, stage.augment, self.look), info

    def _prepare_cached(
        self, index: int, stage: Stage, train: Any, validation: Any
    ) -> tuple[keras.Model, dict[str, Any], CacheInfo]:
        if stage.augment is not None:
            raise CacheUnavailable(f"augmentation is on ({type(stage.augment).__name__})")
        plan = caching.plan_cut(self.model)
        split = caching.split_model(self.model, plan)
        # Running the prefix eagerly three times costs seconds, so only layers zoo cannot
        # vouch for are probed. The look is counted either way, so the iteration count
        # (which resume replays) does not depend on it.
        looked = self.look(train)
        unvetted = caching.layers_to_probe(plan)
        if unvetted:
            sample = next(looked)[0][:4]
            problem = caching.probe_prefix(split.prefix, sample)
            if problem:
                raise CacheUnavailable(f"{problem}; probed because of {unvetted[:3]}")
        info = CacheInfo(
            used=True,
            cut=plan.block,
            cut_layer=plan.layer,
            dtype=stage.cache_dtype,
            exact=stage.cache_dtype == "float32",
            reason=(
                "head-only cache at the backbone's output"
                if plan.is_backbone_output
                else f"frozen-prefix cache at the end of block {plan.block!r}"
            ),
        )
        t0 = time.perf_counter()
        target = self._target(plan, split.prefix, stage)
        info.key = target.key
        share = functools.partial(self._shared_base, index, stage, plan)
        tr, va, reused = self._activations(target, train, validation, stage, info, share)
        info.build_seconds = time.perf_counter() - t0
        info.reused = reused
        info.pass_seconds = tr.seconds + (va.seconds if va is not None else 0.0)
        info.shape = tuple(int(d) for d in tr.x.shape[1:])
        info.size_bytes = tr.nbytes + (va.nbytes if va is not None else 0)
        info.location = tr.location
        batch = self.cache_batch_size or tr.batch_size or 32
        steps = -(-len(tr.x) // batch)
        shuffle, seed = self.shuffle, self.seed

        def train_ds(first: int, epochs: int, to_labels: Any) -> Any:
            return caching.cached_dataset(
                tr,
                batch,
                first_epoch=first,
                epochs=None,
                shuffle=shuffle,
                seed=seed,
                label_transform=to_labels,
            )

        def val_ds(to_labels: Any) -> Any:
            if va is None:
                return None
            return caching.cached_dataset(
                va,
                batch,
                first_epoch=0,
                epochs=1,
                shuffle=False,
                seed=seed,
                label_transform=to_labels,
            )

        if self.verbose:
            print(
                f"Stage {stage.name!r}: {info.reason}; {info.size_bytes / 1e6:.1f} MB in "
                f"{info.location} ({info.location_reason}), built in {info.build_seconds:.1f} s."
            )
        data = {
            "train": train_ds,
            "validation": val_ds,
            "steps": steps,
            "cached": True,
            "examples": len(tr.x),
        }
        return split.suffix, data, info

    def _target(self, plan: caching.CutPlan, prefix: keras.Model, stage: Stage) -> _CacheTarget:
        size = tuple(self.model.inputs[0].shape[1:3])
        key = caching.prefix_key(self.model, plan, size, self.fingerprint, stage.cache_dtype)
        return _CacheTarget(prefix=prefix, key=key, block=plan.block)

    def _shared_base(self, index: int, stage: Stage, plan: caching.CutPlan) -> Any:
        """The next stage's cache target and the model from it to ``plan``'s cut, or None.

        When the next stage will cache lower down, computing its activations now and
        deriving this stage's from them runs the images through the shared bottom once
        for both stages. The next stage's policy is applied for a moment to find its cut
        (then this stage's again); whether its prefix is still the same when it runs is
        checked by its key then.
        """
        if index + 1 >= len(self.stages):
            return None
        nxt = self.stages[index + 1]
        if not (
            nxt.cache == "auto"
            and nxt.augment is None
            and nxt.frozen_inference == stage.frozen_inference
            # Deriving from reduced-precision activations would round twice.
            and stage.cache_dtype == nxt.cache_dtype == "float32"
        ):
            return None
        try:
            _apply_policy(self.model, nxt.policy)
            below = caching.plan_cut(self.model)
        except (CacheUnavailable, ValueError) as err:
            log.info("Stage %r computes its own cache: the next one has none (%s)", stage.name, err)
            return None
        finally:
            _apply_policy(self.model, stage.policy)
        try:
            middle = caching.middle_model(self.model, below, plan)
            prefix = caching.split_model(self.model, below).prefix
        except CacheUnavailable as err:
            log.info("Stage %r computes its own cache: %s", stage.name, err)
            return None
        return self._target(below, prefix, stage), middle

    def _activations(
        self,
        target: _CacheTarget,
        train: Any,
        validation: Any,
        stage: Stage,
        info: CacheInfo,
        share: Callable[[], tuple[_CacheTarget, keras.Model] | None] | None = None,
    ) -> tuple[Any, Any, bool]:
        """The target's activations: reused if held or found, else computed.

        ``share()``, called only when they must be computed, may return the next stage's
        target and the model from its cut to this one (see :meth:`_shared_base`): then
        these are derived from the next stage's activations, which stay held for it.
        """
        # Building the cache iterates ``train`` once; reusing one skips an iteration, so
        # the count (and later plain epochs' order) is the same either way.
        if target.key in self.memory:
            info.location_reason = "reused from an earlier stage"
            self.look(train)
            self.memory = {target.key: self.memory[target.key]}  # drop the rest
            return (*self.memory[target.key], True)
        shared = self._shared_dir(target.key)
        if shared is not None and self._load(target.key, shared, train, validation):
            info.location_reason = "reused from the run directory (kept there for a resume)"
            return (*self.memory[target.key], True)
        disk, temporary = caching.default_disk_dir(self.cache_dir, target.key)
        if temporary:
            self.temp_dirs.append(disk)
        elif self.fingerprint is not None and self._load(target.key, disk, train, validation):
            info.location_reason = "reused from disk (same key)"
            return (*self.memory[target.key], True)
        shared = share() if share is not None else None
        if shared is None:
            tr, va = self._compute(target.prefix, train, validation, disk, stage)
            self.memory = {target.key: (tr, va)}  # keep one cache alive at a time
        else:
            base, middle = shared
            tr, va = self._derive(base, middle, train, validation, disk, stage)
            self.memory[target.key] = (tr, va)  # beside the base, which the next stage reuses
            info.derived_from = base.block
        on_disk = tr.location != "memory" or (va is not None and va.location != "memory")
        if on_disk:
            info.location_reason = f"activations exceed the memory budget of {self.budget} bytes"
            log.warning("Activation cache on disk at %s: %s", disk, info.location_reason)
        else:
            info.location_reason = f"fits the memory budget of {self.budget} bytes"
        return tr, va, False

    def _load(self, key: str, disk: Path, train: Any, validation: Any) -> bool:
        """Holds the complete activations found in ``disk`` (counted as a look at ``train``)."""
        tr = caching.load_activations(disk, "train")
        va = caching.load_activations(disk, "validation") if validation is not None else None
        if tr is None or (validation is not None and va is None):
            return False
        self.look(train)
        self.memory = {key: (tr, va)}
        return True

    def _shared_dir(self, key: str) -> Path | None:
        return self.run_path / SHARED_CACHE_DIR / key[:16] if self.run_path else None

    def _compute(
        self, prefix: keras.Model, train: Any, validation: Any, disk: Path, stage: Stage
    ) -> tuple[Any, Any]:
        """Runs ``prefix`` over the training and validation data (one look at ``train``)."""
        kwargs = self._store_options(disk, stage)
        self.iterations += 1
        tr = caching.compute_activations(
            prefix, train, budget_bytes=self.budget, label="train", **kwargs
        )
        va = None
        if validation is not None:
            left = max(self.budget - _in_memory(tr), 0)
            va = caching.compute_activations(
                prefix, validation, budget_bytes=left, label="validation", **kwargs
            )
        return tr, va

    def _derive(
        self,
        base: _CacheTarget,
        middle: keras.Model,
        train: Any,
        validation: Any,
        disk: Path,
        stage: Stage,
    ) -> tuple[Any, Any]:
        """The base target's activations first (kept for the next stage), then these.

        With a run directory the base is also written there: a run resumed in the next
        stage then trains on the same bits, not on a pass over differently shuffled
        batches (whose last bits can differ), and is exact.
        """
        base_tr, base_va, _ = self._activations(base, train, validation, stage, CacheInfo())
        shared = self._shared_dir(base.key)
        if shared is not None and not (shared / "train.json").exists():
            for label, acts in (("train", base_tr), ("validation", base_va)):
                if acts is not None:
                    caching.save_activations(acts, shared, label, stage.cache_dtype)
        kwargs = self._store_options(disk, stage)
        left = max(self.budget - _in_memory(base_tr) - _in_memory(base_va), 0)
        tr = caching.derive_activations(middle, base_tr, budget_bytes=left, label="train", **kwargs)
        va = None
        if base_va is not None:
            left = max(left - _in_memory(tr), 0)
            va = caching.derive_activations(
                middle, base_va, budget_bytes=left, label="validation", **kwargs
            )
        return tr, va

    def _store_options(self, disk: Path, stage: Stage) -> dict[str, Any]:
        return {
            "dtype": stage.cache_dtype,
            "disk_dir": disk,
            "jit_compile": self.jit_compile,
            "verbose": self.verbose,
        }

    def _callbacks(
        self,
        index: int,
        stage: Stage,
        result: StageResult,
        early: _EarlyStopping,
        done: list[StageResult],
        frozen_sets: list[set[str]],
        partial: dict[str, Any] | None,
    ) -> list[Any]:
        cbs: list[Any] = [_History(result.history), early]
        if self.run_path is not None:
            self.run_path.mkdir(parents=True, exist_ok=True)
            name = f"{index}_{stage.name}"
            cbs.append(
                keras.callbacks.CSVLogger(
                    str(self.run_path / f"{name}.csv"), append=partial is not None
                )
            )
            if _tensorboard_available():
                cbs.append(
                    keras.callbacks.TensorBoard(
                        str(self.run_path / "logs" / name), write_graph=False, profile_batch=0
                    )
                )
            else:
                log.warning("TensorBoard is not installed (pip install tensorboard); no TB logs.")
            cbs.append(_Checkpoint(self, index, result, early, done, frozen_sets))
        return cbs + self.callbacks

    # -- checkpoints

    def save(
        self,
        index: int,
        epoch: int,
        done: list[StageResult],
        frozen_sets: list[set[str]],
        extra: dict[str, Any],
        finished: bool = False,
    ) -> None:
        """Writes the checkpoint: ``finished`` marks stage ``index`` complete."""
        if self.run_path is None:
            return
        state = {
            "version": 1,
            "stage_names": [s.name for s in self.stages],
            "stage": index + 1 if finished else index,
            "epoch": 0 if finished else epoch,
            # Where the stage to resume begins in the count of ``train``'s iterations.
            "train_iterations": self.iterations if finished else self.stage_start,
            "completed": [r.to_dict() for r in done],
            "frozen": [sorted(s) for s in frozen_sets],
            **extra,
        }
        _write_checkpoint(self.model, self.run_path, state, extra.get("_optimizer"))

    def cleanup(self) -> None:
        self.memory.clear()
        for path in self.temp_dirs:
            caching.remove_dir(path)


class _History(keras.callbacks.Callback):
    """Appends each epoch's logs to a dict of lists (kept across a resume)."""

    def __init__(self, history: dict[str, list[float]]) -> None:
        super().__init__()
        self.history = history

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(float(v))


class _EarlyStopping(keras.callbacks.Callback):
    """Stops after ``patience`` epochs without a lower loss; its state is checkpointed."""

    def __init__(self, patience: int | None, has_validation: bool) -> None:
        super().__init__()
        self.patience = patience
        self.monitor = "val_loss" if has_validation else "loss"
        self.best = math.inf
        self.wait = 0
        self.stopped = False

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait, "stopped": self.stopped}

    def set_state(self, state: dict[str, Any]) -> None:
        self.best = float(state.get("best", math.inf))
        self.wait = int(state.get("wait", 0))

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


class _Checkpoint(keras.callbacks.Callback):
    """Writes ``checkpoints/last.npz`` atomically at the end of every epoch."""

    def __init__(
        self,
        session: _Session,
        index: int,
        result: StageResult,
        early: _EarlyStopping,
        done: list[StageResult],
        frozen_sets: list[set[str]],
    ) -> None:
        super().__init__()
        self.session, self.index, self.result = session, index, result
        self.early, self.done, self.frozen_sets = early, done, frozen_sets

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        extra = {
            "history": self.result.history,
            "early": self.early.state(),
            "stopped": self.early.stopped,
            "_optimizer": self.model.optimizer,
        }
        self.session.save(self.index, epoch + 1, self.done, self.frozen_sets, extra)


def _write_checkpoint(model: keras.Model, run_path: Path, state: dict[str, Any], opt: Any) -> None:
    """Weights, optimizer state and ``state`` in one file, replaced atomically."""
    folder = run_path / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in state.items() if not k.startswith("_")}
    arrays = {f"m{i}": np.asarray(v) for i, v in enumerate(model.variables)}
    state["model_paths"] = [v.path for v in model.variables]
    if opt is not None:
        arrays.update({f"o{i}": np.asarray(v) for i, v in enumerate(opt.variables)})
        state["optimizer"] = len(opt.variables)
    arrays["state"] = np.frombuffer(json.dumps(state).encode(), dtype=np.uint8)
    tmp = folder / f".{CHECKPOINT_NAME}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / CHECKPOINT_NAME)


def _load_checkpoint(model: keras.Model, run_path: Path | None) -> dict[str, Any] | None:
    """Loads weights from the checkpoint; returns its state (optimizer values inside)."""
    path = run_path / "checkpoints" / CHECKPOINT_NAME if run_path else None
    if path is None or not path.exists():
        log.warning("resume=True but no checkpoint at %s; starting from the beginning", path)
        return None
    with np.load(path) as data:
        state = json.loads(bytes(data["state"]).decode())
        paths = [v.path for v in model.variables]
        if paths != state["model_paths"]:
            raise InvalidValueError(
                f"The checkpoint {path} was written for another model "
                f"({len(state['model_paths'])} variables, this model has {len(paths)}); "
                "resume with the same recipe or start a new run directory."
            )
        for i, v in enumerate(model.variables):
            v.assign(data[f"m{i}"])
        if state.get("optimizer"):
            state["optimizer"] = [data[f"o{i}"] for i in range(state["optimizer"])]
    return state


def _check_same_stages(state: dict[str, Any], stages: Sequence[Stage]) -> None:
    names = [s.name for s in stages]
    if state["stage_names"] != names:
        raise InvalidValueError(
            f"The checkpoint was written for stages {state['stage_names']}, not {names}; "
            "resume with the same stages or start a new run directory."
        )


def _restore_optimizer(optimizer: Any, values: list[np.ndarray] | None) -> None:
    if not values:
        return
    variables = optimizer.variables
    shapes_ok = len(variables) == len(values) and all(
        tuple(v.shape) == tuple(a.shape) for v, a in zip(variables, values, strict=False)
    )
    if not shapes_ok:
        log.warning("Optimizer state in the checkpoint does not fit; starting it afresh.")
        return
    for v, a in zip(variables, values, strict=True):
        v.assign(a)


# ----------------------------------------------------------------------------- pieces


def _plain_data(train: Any, validation: Any, augment: Any, look: Any = iter) -> dict[str, Any]:
    """Plain training data; ``look`` makes (and counts) iterators of ``train``."""
    import tensorflow as tf

    steps = int(train.cardinality())
    if steps < 0:
        steps = sum(1 for _ in look(train))
    batch = int(next(look(train))[0].shape[0])

    def train_ds(first: int, epochs: int, to_labels: Any) -> Any:
        ds = train
        if augment is not None:
            ds = ds.map(lambda x, y: (augment(x, training=True), y), tf.data.AUTOTUNE)
        ds = ds.map(to_labels) if to_labels is not None else ds

        def one_epoch(epoch: Any) -> Any:
            return ds

        # Epochs first..epochs-1 as one stream (fit with steps_per_epoch): each epoch makes
        # exactly one iterator of ``train`` when it begins (Keras' own per-epoch iterators
        # make two), and nothing reads ahead into an epoch that early stopping cancels.
        stream = tf.data.Dataset.range(first, epochs).flat_map(one_epoch)
        options = tf.data.Options()
        options.experimental_optimization.inject_prefetch = False
        return stream.with_options(options)

    def val_ds(to_labels: Any) -> Any:
        if validation is None or to_labels is None:
            return validation
        return validation.map(to_labels)

    return {
        "train": train_ds,
        "validation": val_ds,
        "steps": steps,
        "cached": False,
        "examples": steps * batch,
    }


def _loss_and_metrics(model: keras.Model, stage: Stage) -> tuple[Any, list[Any], Any]:
    """Loss from logits, accuracy metric, and a label transform (one-hot) if needed."""
    import tensorflow as tf

    num_classes = int(model.outputs[0].shape[-1])
    multi = _multi_label(model)
    if multi:
        loss = keras.losses.BinaryCrossentropy(
            from_logits=True, label_smoothing=stage.label_smoothing
        )
        return loss, [keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)], None
    if stage.label_smoothing > 0:
        loss = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=stage.label_smoothing
        )

        def one_hot(x: Any, y: Any) -> Any:
            return x, tf.one_hot(tf.cast(tf.reshape(y, [-1]), tf.int32), num_classes)

        return loss, [keras.metrics.CategoricalAccuracy(name="accuracy")], one_hot
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return loss, [keras.metrics.SparseCategoricalAccuracy(name="accuracy")], None


def _multi_label(model: keras.Model) -> bool:
    try:
        from zoo.classifier import classifier_info

        return bool(classifier_info(model).get("multi_label", False))
    except Exception:  # a bare model is single-label
        return False


def _make_optimizer(stage: Stage, model: keras.Model, steps: int, mixed: str | None) -> Any:
    from zoo.policies import make_optimizer

    lr = _learning_rate(stage, steps)
    kwargs = {} if stage.weight_decay is None else {"weight_decay": stage.weight_decay}
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


def _tensorboard_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


class _mixed_precision:
    """Sets every layer's dtype policy to a mixed one for the block; restores it after."""

    def __init__(self, model: keras.Model, mixed: str | None) -> None:
        self.model, self.mixed, self.saved = model, mixed, []

    def __enter__(self) -> None:
        if self.mixed is None:
            return
        policy = MIXED_PRECISION[self.mixed]
        for layer in [self.model, *caching.all_layers(self.model)]:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            self.saved.append((layer, layer.dtype_policy))
            layer.dtype_policy = policy

    def __exit__(self, *exc: Any) -> None:
        for layer, policy in self.saved:
            layer.dtype_policy = policy
