"""One place that decides, for each fine-tuning stage, what to fit and on which data.

:func:`plan_cuts` finds every stage's cut (:func:`zoo.caching.plan.plan_cut` under that
stage's policy) before anything trains. :class:`ActivationProvider`, given the stages and
their cuts once, returns for each (:meth:`~ActivationProvider.for_stage`) a
:class:`StageInput`: the model to fit (the suffix on cached activations, or the full model
the plain way), its data (:mod:`zoo.caching.dataset`) and the stage's :class:`CacheInfo`,
built once and immutable.

Activations are reused when held from the previous stage, kept in the run directory for
a resume, or found on disk under the same key; otherwise computed. When the next stage
caches lower down, its activations are computed first and this stage's derived from them,
so one pass over the images serves both (``CacheInfo.derived_from``).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras

from zoo.caching import compute, store
from zoo.caching import plan as planning
from zoo.caching.dataset import ArrayInput, ArrayPlainData, CachedData, PlainData, TrainIterations
from zoo.caching.plan import CacheUnavailable, CutPlan
from zoo.caching.store import DEFAULT_CACHE_BUDGET_BYTES, Activations

log = logging.getLogger("zoo.training")

SHARED_CACHE_DIR = "shared-cache"  # in run_dir: activations two stages share, until the end


@dataclass(frozen=True)
class CacheInfo:
    """What the cache did in one stage (JSON-able via :meth:`to_dict`).

    Attributes:
        used: whether the stage trained the suffix on cached activations.
        reason: why not (the first condition that failed), or a short description of the
            cut when used.
        cut: the block whose end is the cut (``None`` when no cut was valid); the last
            block means the backbone's output (head-only cache).
        cut_layer: the backbone layer whose output is cached.
        location: ``"memory"`` or the directory of the on-disk memmap; ``None`` if unused.
        location_reason: why the cache lives where it does.
        size_bytes: bytes of the stored activations (train + validation).
        shape: activation shape per example, ``(h', w', channels)``.
        dtype: storage dtype; anything but float32 makes results approximate.
        exact: False when activations were stored in a reduced precision.
        build_seconds: wall time to compute (or load) the activations.
        pass_seconds: wall time of one pass from pixels to the cut over the training and
            validation data, measured when the activations were computed (in this stage,
            an earlier one, or the run that wrote them to disk): what each epoch would
            spend on the prefix without the cache.
        key: sha256 of what the activations depend on (backbone, weights, cut, input
            size, data fingerprint, dtype).
        reused: the activations came from an earlier stage or an earlier run.
        derived_from: the lower block whose cached activations these were computed from
            (kept for the next stage, which caches there), or None.
        engine: the inference engine that computed the activations (of a derived cache:
            the pass from the lower cut) and its probe, as
            ``zoo.caching.engine.EngineChoice.to_dict`` gives it; None when unused or
            unknown. Every engine agrees with TensorFlow's model as built within a
            relative error of ``PARITY_RTOL`` on the probe batch.
    """

    used: bool = False
    reason: str = ""
    cut: str | None = None
    cut_layer: str | None = None
    location: str | None = None
    location_reason: str = ""
    size_bytes: int = 0
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    exact: bool = True
    build_seconds: float = 0.0
    pass_seconds: float = 0.0
    key: str | None = None
    reused: bool = False
    derived_from: str | None = None
    engine: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the fields."""
        d = asdict(self)
        d["shape"] = list(self.shape) if self.shape else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CacheInfo:
        """The inverse of :meth:`to_dict`."""
        shape = d.get("shape")
        return cls(**{**d, "shape": tuple(shape) if shape else None})


@dataclass(frozen=True)
class CacheOptions:
    """How one :func:`zoo.fine_tune` call caches (its arguments of the same names).

    Attributes:
        cache_dir: where over-budget activations go (and are found again by key); None:
            a temporary directory, deleted by :meth:`ActivationProvider.close`.
        budget_bytes: largest activation cache kept in memory.
        data_fingerprint: identity of the data, part of the key; without it an on-disk
            cache is not reused across calls.
        shuffle: reshuffle cached examples every epoch.
        batch_size: batch size on the cache; default the dataset's.
        seed: seed of the shuffling.
        jit_compile: compile the cache's forward pass with XLA.
        verbose: 1 prints what the cache did and shows progress bars.
        run_dir: where activations two stages share are kept for a resume, or None.
        inference_engine: the engine of the cache's passes, ``"auto"``, ``"tensorflow"``
            or ``"litert"`` (:mod:`zoo.caching.engine`); part of the key.
    """

    cache_dir: str | os.PathLike | None = None
    budget_bytes: int = DEFAULT_CACHE_BUDGET_BYTES
    data_fingerprint: str | None = None
    shuffle: bool = True
    batch_size: int | None = None
    seed: int = 0
    jit_compile: bool = False
    verbose: int = 1
    run_dir: Path | None = None
    inference_engine: str = "auto"


@dataclass(frozen=True)
class StageInput:
    """What a stage fits: ``model`` (the full model or its suffix) on ``data``."""

    model: keras.Model
    data: CachedData | PlainData | ArrayPlainData
    cache: CacheInfo


@dataclass(frozen=True)
class _Target:
    """Activations to obtain: the prefix that computes them, their key, the cut."""

    prefix: keras.Model
    key: str
    plan: CutPlan


@dataclass(frozen=True)
class _Obtained:
    """Activations for a target, and how they were come by."""

    train: Activations
    validation: Activations | None
    reused: bool
    location_reason: str
    derived_from: str | None = None


def plan_cuts(model: keras.Model, stages: Sequence[Any]) -> list[CutPlan | str]:
    """Each stage's cut (:func:`zoo.caching.plan.plan_cut`), or why it has none.

    Decided once, before any stage trains, by applying each caching stage's policy in turn
    (with its frozen stochastic layers switched off, as when it runs); the stage loop
    applies the policy again when the stage runs. Knowing the next stage's cut lets a
    stage compute the next one's activations and derive its own from them.
    """
    cuts: list[CutPlan | str] = []
    for stage in stages:
        if stage.cache != "auto":
            cuts.append("cache='off' for this stage")
        elif stage.augment is not None:
            cuts.append(f"augmentation is on ({type(stage.augment).__name__})")
        else:
            planning.apply_policy(model, stage.policy)
            try:
                with planning.stochastic_frozen_layers_off(model, stage.frozen_inference):
                    cuts.append(planning.plan_cut(model))
            except CacheUnavailable as err:
                cuts.append(str(err))
    return cuts


def _held(*acts: Activations | None) -> int:
    return sum(a.in_memory_bytes for a in acts if a is not None)


@dataclass
class ActivationProvider:
    """The model and data of each stage of one :func:`zoo.fine_tune` call.

    Attributes:
        model: the classifier being fine-tuned.
        stages: the ``zoo.Stage`` s, in order.
        cuts: each stage's cut, or why it has none (:func:`plan_cuts`).
        options: the call's :class:`CacheOptions`.
        counter: counts the iterations of the training dataset (exact resume).
    """

    model: keras.Model
    stages: Sequence[Any]
    cuts: Sequence[CutPlan | str]
    options: CacheOptions
    counter: TrainIterations
    _memory: dict[str, tuple[Activations, Activations | None]] = field(default_factory=dict)
    _temp_dirs: list[Path] = field(default_factory=list)

    def for_stage(self, index: int, train: Any, validation: Any) -> StageInput:
        """The stage's model and data; call with its policy applied (and its frozen
        stochastic layers off when ``frozen_inference``)."""
        stage = self.stages[index]
        try:
            return self._cached(index, train, validation)
        except CacheUnavailable as err:
            info = CacheInfo(reason=str(err))
        log.warning("Stage %r trains the plain way (no cache): %s", stage.name, info.reason)
        if self.options.verbose:
            print(f"Stage {stage.name!r}: no activation cache ({info.reason}).")
        if isinstance(train, ArrayInput):
            self.counter.look(train)  # as PlainData.of's look at a dataset of known length
            data: PlainData | ArrayPlainData = ArrayPlainData(train, validation, self.counter)
        else:
            data = PlainData.of(train, validation, stage.augment, self.counter)
        return StageInput(self.model, data, info)

    def _cached(self, index: int, train: Any, validation: Any) -> StageInput:
        stage, plan = self.stages[index], self.cuts[index]
        if isinstance(plan, str):
            raise CacheUnavailable(plan)
        split = planning.split_model(self.model, plan)
        # Running the prefix eagerly three times costs seconds, so only layers zoo cannot
        # vouch for are probed. The look is counted either way, so the iteration count
        # (which resume replays) does not depend on it.
        looked = self.counter.look(train)
        unvetted = planning.layers_to_probe(plan)
        if unvetted:
            problem = planning.probe_prefix(split.prefix, next(looked)[0][:4])
            if problem:
                raise CacheUnavailable(f"{problem}; probed because of {unvetted[:3]}")
        start = time.perf_counter()
        target = self._target(plan, split.prefix, stage.cache_dtype)
        got = self._obtain(target, index, train, validation, look_ahead=True)
        tr, va = got.train, got.validation
        info = CacheInfo(
            used=True,
            reason=(
                "head-only cache at the backbone's output"
                if plan.is_backbone_output
                else f"frozen-prefix cache at the end of block {plan.block!r}"
            ),
            cut=plan.block,
            cut_layer=plan.layer,
            location=tr.location,
            location_reason=got.location_reason,
            size_bytes=tr.nbytes + (va.nbytes if va is not None else 0),
            shape=tuple(int(d) for d in tr.x.shape[1:]),
            dtype=stage.cache_dtype,
            exact=stage.cache_dtype == "float32",
            build_seconds=time.perf_counter() - start,
            pass_seconds=tr.seconds + (va.seconds if va is not None else 0.0),
            key=target.key,
            reused=got.reused,
            derived_from=got.derived_from,
            engine=tr.engine,
        )
        if self.options.verbose:
            print(
                f"Stage {stage.name!r}: {info.reason}; {info.size_bytes / 1e6:.1f} MB in "
                f"{info.location} ({info.location_reason}), built in {info.build_seconds:.1f} s"
                + (f" on {info.engine['engine']}." if info.engine else ".")
            )
        batch = self.options.batch_size or tr.batch_size or 32
        data = CachedData(tr, va, batch, self.options.shuffle, self.options.seed)
        return StageInput(split.suffix, data, info)

    def _target(self, plan: CutPlan, prefix: keras.Model, dtype: str) -> _Target:
        size = tuple(self.model.inputs[0].shape[1:3])
        key = store.prefix_key(
            self.model,
            plan,
            size,
            self.options.data_fingerprint,
            dtype,
            self.options.inference_engine,
        )
        return _Target(prefix=prefix, key=key, plan=plan)

    def _obtain(
        self, target: _Target, index: int, train: Any, validation: Any, look_ahead: bool
    ) -> _Obtained:
        """The target's activations: reused if held or found, else computed.

        With ``look_ahead``, when the next stage caches lower down, its activations are
        obtained first (and stay held for it) and these derived from them.
        """
        # Building the cache iterates ``train`` once; reusing one skips an iteration, so
        # the count (and later plain epochs' order) is the same either way.
        key = target.key
        if key in self._memory:
            self.counter.look(train)
            self._memory = {key: self._memory[key]}  # drop the rest
            return _Obtained(*self._memory[key], True, "reused from an earlier stage")
        shared = self._shared_dir(key)
        if shared is not None and self._load(key, shared, train, validation):
            reason = "reused from the run directory (kept there for a resume)"
            return _Obtained(*self._memory[key], True, reason)
        disk, temporary = store.default_disk_dir(self.options.cache_dir, key)
        if temporary:
            self._temp_dirs.append(disk)
        elif self.options.data_fingerprint is not None and self._load(key, disk, train, validation):
            return _Obtained(*self._memory[key], True, "reused from disk (same key)")
        base = self._shared_base(index, target) if look_ahead else None
        dtype = self.stages[index].cache_dtype
        if base is None:
            tr, va = self._compute(target.prefix, train, validation, disk, dtype)
            self._memory = {key: (tr, va)}  # keep one cache alive at a time
        else:
            tr, va = self._derive(*base, index, train, validation, disk)
            self._memory[key] = (tr, va)  # beside the base, which the next stage reuses
        budget = self.options.budget_bytes
        if tr.location != "memory" or (va is not None and va.location != "memory"):
            reason = f"activations exceed the memory budget of {budget} bytes"
            log.warning("Activation cache on disk at %s: %s", disk, reason)
        else:
            reason = f"fits the memory budget of {budget} bytes"
        return _Obtained(tr, va, False, reason, base[0].plan.block if base else None)

    def _shared_base(self, index: int, target: _Target) -> tuple[_Target, keras.Model] | None:
        """The next stage's target and the model from its cut to ``target``'s, or None."""
        if index + 1 >= len(self.stages):
            return None
        stage, nxt, below = self.stages[index], self.stages[index + 1], self.cuts[index + 1]
        if isinstance(below, str) or not (
            nxt.frozen_inference == stage.frozen_inference
            # Deriving from reduced-precision activations would round twice.
            and stage.cache_dtype == nxt.cache_dtype == "float32"
        ):
            return None
        try:
            middle = planning.middle_model(self.model, below, target.plan)
            prefix = planning.split_model(self.model, below).prefix
        except CacheUnavailable as err:
            log.info("Stage %r computes its own cache: %s", stage.name, err)
            return None
        return self._target(below, prefix, stage.cache_dtype), middle

    def _load(self, key: str, disk: Path, train: Any, validation: Any) -> bool:
        """Holds the complete activations found in ``disk`` (counted as a look at ``train``)."""
        tr = store.load_activations(disk, "train")
        va = store.load_activations(disk, "validation") if validation is not None else None
        if tr is None or (validation is not None and va is None):
            return False
        self.counter.look(train)
        self._memory = {key: (tr, va)}
        return True

    def _shared_dir(self, key: str) -> Path | None:
        run_dir = self.options.run_dir
        return run_dir / SHARED_CACHE_DIR / key[:16] if run_dir is not None else None

    def _store_options(self, disk: Path, dtype: str) -> dict[str, Any]:
        o = self.options
        return {
            "dtype": dtype,
            "disk_dir": disk,
            "jit_compile": o.jit_compile,
            "verbose": o.verbose,
            "engine": o.inference_engine,
        }

    def _compute(
        self, prefix: keras.Model, train: Any, validation: Any, disk: Path, dtype: str
    ) -> tuple[Activations, Activations | None]:
        """Runs ``prefix`` over the training and validation data (one look at ``train``)."""
        kwargs, budget = self._store_options(disk, dtype), self.options.budget_bytes
        self.counter.count += 1
        tr = compute.compute_activations(
            prefix, train, budget_bytes=budget, label="train", **kwargs
        )
        va = None
        if validation is not None:
            left = max(budget - _held(tr), 0)
            va = compute.compute_activations(
                prefix, validation, budget_bytes=left, label="validation", **kwargs
            )
        return tr, va

    def _derive(
        self,
        base: _Target,
        middle: keras.Model,
        index: int,
        train: Any,
        validation: Any,
        disk: Path,
    ) -> tuple[Activations, Activations | None]:
        """The base target's activations first (kept for the next stage), then these.

        With a run directory the base is also written there: a run resumed in the next
        stage then trains on the same bits, not on a pass over differently shuffled
        batches (whose last bits can differ), and is exact.
        """
        got = self._obtain(base, index, train, validation, look_ahead=False)
        dtype = self.stages[index].cache_dtype
        shared = self._shared_dir(base.key)
        if shared is not None and not (shared / "train.json").exists():
            for label, acts in (("train", got.train), ("validation", got.validation)):
                if acts is not None:
                    store.save_activations(acts, shared, label, dtype)
        kwargs = self._store_options(disk, dtype)
        left = max(self.options.budget_bytes - _held(got.train, got.validation), 0)
        tr = compute.derive_activations(
            middle, got.train, budget_bytes=left, label="train", **kwargs
        )
        va = None
        if got.validation is not None:
            left = max(left - _held(tr), 0)
            va = compute.derive_activations(
                middle, got.validation, budget_bytes=left, label="validation", **kwargs
            )
        return tr, va

    def finish(self) -> None:
        """The call completed: no resume will need the activations kept for one."""
        if self.options.run_dir is not None:
            shutil.rmtree(self.options.run_dir / SHARED_CACHE_DIR, ignore_errors=True)

    def close(self) -> None:
        """Drops held activations and deletes temporary cache directories."""
        self._memory.clear()
        for path in self._temp_dirs:
            store.remove_dir(path)
