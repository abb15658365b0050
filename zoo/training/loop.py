"""Multi-stage fine-tuning: the stage loop around Keras ``fit``.

``fine_tune(model, train, validation, stages)`` runs :class:`~zoo.training.stages.Stage` s
in order. Each stage applies its freezing policy (``zoo.policies``), recompiles, and
trains with the options users expect: Adam / AdamW / SGD, constant or cosine learning
rate with linear warmup, label smoothing, class weights, early stopping, the best
validation epoch's weights restored at the end of each stage, a moving average of the
weights (EMA), mixed precision,
XLA (both chosen by a probe with ``"auto"``), Keras progress bars, TensorBoard and CSV
logs, and a checkpoint every epoch (:mod:`zoo.training.checkpoint`) from which
``resume=True`` carries on after a crash (even ``kill -9``).

Where a stage leaves the bottom of the backbone frozen, it trains only the top on
activations cached once: :class:`zoo.caching.ActivationProvider` decides, per stage, the
model to fit and its data. The trained layers are the full model's own, so nothing needs
copying back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from zoo.caching import (
    DEFAULT_CACHE_BUDGET_BYTES,
    ActivationProvider,
    CacheOptions,
    TrainIterations,
    apply_policy,
    plan_cuts,
)
from zoo.caching.dataset import ArrayInput
from zoo.caching.engine import check_engine
from zoo.caching.plan import stochastic_frozen_layers_off
from zoo.errors import InvalidValueError
from zoo.fingerprint import frozen_paths, named_weights
from zoo.lora import add_adapters
from zoo.training.callbacks import (
    AveragedValidation,
    BestEpoch,
    Checkpoint,
    History,
    averaged_pairs,
)
from zoo.training.checkpoint import (
    CheckpointState,
    best_weights,
    load_checkpoint,
    restore_optimizer,
    save_checkpoint,
)
from zoo.training.compile import loss_and_metrics, stage_optimizer, with_label_augmentation
from zoo.training.distribute import (
    DistributionInfo,
    assign_in_place,
    check_global_batch,
    check_model_in_scope,
    jax_distribution,
    resolve_distribution,
)
from zoo.training.inputs import prepare_inputs
from zoo.training.settings import (
    AUTO,
    MIXED_PRECISION,
    SettingsProbe,
    choose_settings,
    mixed_precision_policy,
)
from zoo.training.stages import FineTuneResult, Stage, StageResult

log = logging.getLogger("zoo.training")


def fine_tune(
    model: keras.Model,
    train: Any,
    validation: Any,
    stages: Sequence[Stage],
    *,
    run_dir: str | os.PathLike | None = None,
    mixed_precision: str | None = None,
    jit_compile: bool | str | None = None,
    resume: bool = False,
    cache_dir: str | os.PathLike | None = None,
    cache_budget_bytes: int = DEFAULT_CACHE_BUDGET_BYTES,
    data_fingerprint: str | None = None,
    shuffle_cache: bool = True,
    cache_batch_size: int | None = None,
    seed: int = 0,
    verbose: int = 1,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    distribution: Any = None,
    batch_size: int | None = None,
    inference_engine: str = "auto",
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

    Best epoch: with ``validation``, each stage ends with the weights of its best
    ``Stage.monitor`` epoch (``val_loss`` by default), unless ``Stage.restore_best`` is
    False; :class:`StageResult` says which epoch was kept and why. Only the variables the
    stage could change (trainable ones and trainable BatchNorms' moving statistics) are
    copied and written back, so frozen variables keep their bytes. The checkpoint holds
    the best epoch's weights beside the last, so a resumed stage restores the same ones.
    With ``Stage.ema``, validation, the best epoch and the final weights are the moving
    average's, and ``StageResult.without_ema`` gives the raw weights' validation metrics.

    Args:
        model: a classifier from ``zoo.build_classifier`` (layers ``preprocess``,
            ``backbone``, ``head``; outputs logits).
        train: batched ``tf.data.Dataset`` of ``(float32 pixels 0..255 (batch, h, w, 3),
            int labels (batch,))``, as ``zoo.data.pipeline`` makes it; or, on every Keras
            backend, ``(x, y)`` numpy arrays: pixels 0..255 ``(n, h, w, 3)`` float32 or
            uint8 and int labels ``(n,)`` or multi-hot ``(n, classes)``, with
            ``batch_size`` (:mod:`zoo.training.inputs`).
        validation: the same for validation (the same kind as ``train``), or None.
        stages: the stages, run in order.
        run_dir: where logs (``logs/<stage>``, ``<index>_<stage>.csv``) and the checkpoint
            (``checkpoints/last.npz``) go; None writes nothing (and cannot resume).
        mixed_precision: ``"bfloat16"``, ``"float16"``, None (float32) or ``"auto"``
            (probed: :mod:`zoo.training.settings`). Applied to the model's layers for the
            call, restored afterwards.
        jit_compile: compile training (and the cache's forward pass) with XLA; True,
            False, ``"auto"`` (probed, tried only where an accelerator is present) or None:
            the backend's own default, off on TensorFlow and on with JAX (where a step
            without XLA runs op by op).
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
        seed: seed for the cache's shuffling (and the arrays').
        verbose: Keras verbosity (1: progress bars).
        batch_size: images per batch for ``(x, y)`` arrays (required with them, not
            allowed with datasets); their order is shuffled on every pass from ``seed``.
        inference_engine: the engine of the cache's passes (frozen layers in inference
            mode): ``"auto"`` (probed on the pass's first batch: TensorFlow as built,
            with BatchNorm folded, or LiteRT, the fastest that agrees with TensorFlow as
            built within a relative error of 1e-5), ``"tensorflow"`` (BatchNorm folded only
            where faster) or ``"litert"`` (:mod:`zoo.caching.engine`). Each stage's
            ``CacheInfo.engine`` records the choice and the probe's times.
        callbacks: extra Keras callbacks. In a cached stage they see the suffix model,
            whose variables are the full model's.
        distribution: None (the strategy ``model`` was built under, if any), ``"none"``,
            ``"auto"``, ``"mirrored"``, ``"multi_worker"`` or a ``tf.distribute.Strategy``
            (:mod:`zoo.training.distribute`). The model must have been built inside the
            strategy's scope; a name then stands for that strategy. ``train``'s batch is
            the global batch, split evenly among the replicas; learning rates are not
            rescaled. Caches are built once per process (not per replica), and only the
            chief writes checkpoints and logs. Every batch needs at least one image per
            replica (TensorFlow cannot run a replica on none): batch with
            ``drop_remainder=True`` when the last batch would be smaller than the replica
            count (``zoo run`` leaves such a batch out itself and says so).

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
        A :class:`FineTuneResult`; with ``"auto"`` its ``settings_probe`` says what was
        chosen and what each candidate measured. A resumed call keeps the interrupted
        one's settings (recorded in the checkpoint), so the resume stays exact.

    Raises:
        InvalidValueError: no stages, a bad ``mixed_precision``, ``jit_compile`` or
            ``inference_engine``,
            ``resume`` without ``run_dir``, a checkpoint written for different stages
            or another model, arrays without ``batch_size`` or of different lengths, or
            augmentation with arrays on a backend without TensorFlow.
        DistributionError: the model was not built in the strategy's scope, a batch does
            not divide among the replicas, or ``TF_CONFIG`` is unusable.
    """
    if jit_compile is None:
        jit_compile = keras.backend.backend() == "jax"
    _check_args(stages, mixed_precision, jit_compile, resume, run_dir)
    check_engine(inference_engine)
    train, validation = prepare_inputs(train, validation, batch_size, seed, stages)
    with _distribution(distribution, model) as distributed:
        check_global_batch(_static_batch_size(train), distributed, "The training batch")
        check_global_batch(cache_batch_size, distributed, "cache_batch_size")
        stages = [with_label_augmentation(model, stage) for stage in stages]
        start = time.perf_counter()
        run_path = Path(run_dir) if run_dir is not None else None
        add_adapters(model, [stage.policy for stage in stages])  # in every checkpoint
        resumed = load_checkpoint(run_path, model) if resume else None
        if resumed is not None:
            _check_same_stages(resumed[0], stages)
        cuts = plan_cuts(model, stages)
        settings = _settings(model, stages, cuts, mixed_precision, jit_compile, resumed, train)
        options = CacheOptions(
            cache_dir=cache_dir,
            budget_bytes=cache_budget_bytes,
            data_fingerprint=data_fingerprint,
            shuffle=shuffle_cache,
            batch_size=cache_batch_size,
            seed=seed,
            jit_compile=settings.jit_compile,
            inference_engine=inference_engine,
            verbose=verbose,
            # Activations kept for a resume are the chief's to write.
            run_dir=run_path if distributed.is_chief else None,
        )
        counter = TrainIterations()
        loop = _StageLoop(
            model=model,
            stages=list(stages),
            provider=ActivationProvider(model, stages, cuts, options, counter),
            counter=counter,
            settings=settings,
            run_path=run_path,
            verbose=verbose,
            callbacks=list(callbacks),
            writes=distributed.is_chief,
        )
        with mixed_precision_policy(model, settings.mixed_precision):
            try:
                loop.run(train, validation, resumed)
            finally:
                loop.provider.close()
        return FineTuneResult(
            stages=loop.results,
            frozen_in_all_stages=set.intersection(*loop.frozen) if loop.frozen else set(),
            wall_seconds=time.perf_counter() - start,
            mixed_precision=settings.mixed_precision,
            jit_compile=settings.jit_compile,
            run_dir=str(run_path) if run_path else None,
            resumed=resumed is not None,
            settings_probe=settings.to_dict() if AUTO in (mixed_precision, jit_compile) else None,
            distribution=distributed.to_dict(),
        )


@contextlib.contextmanager
def _distribution(distribution: Any, model: keras.Model) -> Iterator[DistributionInfo]:
    """The call's distribution, entered: the Keras distribution API on JAX (set for the
    call), else the ``tf.distribute`` strategy's scope (:mod:`zoo.training.distribute`)."""
    if keras.backend.backend() == "jax":
        with jax_distribution(distribution, model) as info:
            yield info
        return
    strategy, info = resolve_distribution(distribution, model)
    check_model_in_scope(model, strategy)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        yield info


def _check_args(stages: Sequence[Stage], mixed: Any, jit: Any, resume: bool, run_dir: Any) -> None:
    problems = []
    if not stages:
        problems.append("stages is empty; pass at least one Stage")
    bad = [s for s in stages if not isinstance(s, Stage)]
    if bad:
        problems.append(f"stages must be zoo.training.Stage objects, got {bad[:2]}")
    names = [s.name for s in stages if isinstance(s, Stage)]
    if len(set(names)) != len(names):
        problems.append(f"stage names must be unique, got {names}")
    if mixed not in (None, AUTO, *MIXED_PRECISION):
        problems.append(
            f"mixed_precision must be None, 'bfloat16', 'float16' or 'auto', got {mixed!r}"
        )
    if not (isinstance(jit, bool) or jit == AUTO):
        problems.append(f"jit_compile must be True, False or 'auto', got {jit!r}")
    if resume and run_dir is None:
        problems.append("resume=True needs the run_dir of the interrupted run")
    if problems:
        raise InvalidValueError("fine_tune: " + "; ".join(problems) + ".")


def _check_same_stages(state: CheckpointState, stages: Sequence[Stage]) -> None:
    names = [s.name for s in stages]
    if state.stage_names != names:
        raise InvalidValueError(
            f"The checkpoint was written for stages {state.stage_names}, not {names}; "
            "resume with the same stages or start a new run directory."
        )


def _settings(
    model: keras.Model,
    stages: Sequence[Stage],
    cuts: Sequence[Any],
    mixed: str | None,
    jit: bool | str,
    resumed: tuple[CheckpointState, Any] | None,
    train: Any,
) -> SettingsProbe:
    """The settings as given, or for ``"auto"`` probed (or the interrupted run's choice)."""
    if AUTO not in (mixed, jit):
        return SettingsProbe(mixed, bool(jit), probed=False, reason="given explicitly")
    if resumed is not None and resumed[0].settings is not None:
        return SettingsProbe.from_dict(resumed[0].settings)
    return choose_settings(model, stages, cuts, mixed, jit, _static_batch_size(train))


def _static_batch_size(dataset: Any) -> int | None:
    """The batch size in ``dataset``'s element spec, when it is fixed (arrays: theirs)."""
    if isinstance(dataset, ArrayInput):
        return dataset.batch_size
    spec = getattr(dataset, "element_spec", None)
    shape = getattr(spec[0] if isinstance(spec, tuple) else spec, "shape", None)
    return int(shape[0]) if shape is not None and shape.rank and shape[0] is not None else None


@dataclass
class _StageLoop:
    """The stages of one :func:`fine_tune` call, run in order around ``fit``."""

    model: keras.Model
    stages: list[Stage]
    provider: ActivationProvider
    counter: TrainIterations
    settings: SettingsProbe
    run_path: Path | None
    verbose: int
    callbacks: list[Any]
    writes: bool = True  # False on a multi-worker cluster's non-chief workers
    results: list[StageResult] = field(default_factory=list)
    frozen: list[set[str]] = field(default_factory=list)

    def run(self, train: Any, validation: Any, resumed: tuple[CheckpointState, Any] | None) -> None:
        """Runs the stages not yet complete; a checkpoint marks each one done."""
        state, optimizer_values = resumed or (None, {})
        if state is not None:
            self.results, self.frozen = list(state.completed), list(state.frozen)
        self.counter.skip_to(train, state.train_iterations if state else 0)
        for index in range(len(self.results), len(self.stages)):
            partial = state if state is not None and state.stage == index else None
            result, frozen = self.run_stage(index, train, validation, partial, optimizer_values)
            self.results.append(result)
            self.frozen.append(frozen)
            self._save(self._state(index + 1, self.counter.count), None)
        self.provider.finish()

    def run_stage(
        self,
        index: int,
        train: Any,
        validation: Any,
        partial: CheckpointState | None,
        optimizer_values: dict[str, np.ndarray],
    ) -> tuple[StageResult, set[str]]:
        """Trains stage ``index`` (from ``partial``'s epoch on a resume)."""
        stage, model = self.stages[index], self.model
        stage_start = self.counter.count
        apply_policy(model, stage.policy)
        frozen = frozen_paths(model)
        result = StageResult(name=stage.name, index=index)
        first_epoch = partial.epoch if partial is not None else 0
        if partial is not None:
            result.history, result.resumed_at_epoch = partial.history, first_epoch
        # What this stage can change: trainable variables and trainable BatchNorms' moving
        # statistics. Only these are kept for the best epoch and written back.
        changing = [(path, v) for path, v in named_weights(model) if path not in frozen]
        keep_best = stage.restore_best and validation is not None
        with stochastic_frozen_layers_off(model, stage.frozen_inference) as off:
            result.frozen_inference_layers = list(off)
            given = self.provider.for_stage(index, train, validation)
            result.cache, fit_model, data = given.cache, given.model, given.data
            loss, metrics, to_labels = loss_and_metrics(model, stage)
            optimizer = stage_optimizer(stage, model, data.steps, self.settings.mixed_precision)
            # The full model is compiled in a cached stage too, so it can be evaluated next.
            for m in {id(model): model, id(fit_model): fit_model}.values():
                m.compile(optimizer, loss, metrics=metrics, jit_compile=self.settings.jit_compile)
            optimizer.build(fit_model.trainable_variables)
            result.trainable_paths = sorted(v.path for v in fit_model.trainable_variables)
            monitor = stage.monitor if validation is not None else stage.monitor[len("val_") :]
            early = BestEpoch(
                monitor,
                stage.early_stopping_patience,
                (lambda: _snapshot(changing, optimizer)) if keep_best else None,
            )
            averaged = AveragedValidation()
            stopped = False
            if partial is not None:
                restore_optimizer(optimizer, optimizer_values)
                early.wait, stopped = partial.wait, partial.stopped
                if partial.best_epoch is not None:  # else the state of a stage not begun
                    early.best, early.best_epoch = partial.best, partial.best_epoch
                    early.weights = best_weights(optimizer_values) if keep_best else None
            if not data.cached:
                # Each plain epoch iterates ``train`` once; the resumed one takes up there.
                self.counter.skip_to(train, self.counter.count + first_epoch)
            if first_epoch < stage.epochs and not stopped:
                state = self._state(index, stage_start)
                cbs = self._callbacks(index, result, early, state, resuming=partial is not None)
                if stage.ema is not None and validation is not None:
                    cbs.insert(0, averaged)
                t0 = time.perf_counter()
                fit_model.fit(
                    data.train_dataset(first_epoch, stage.epochs, to_labels),
                    validation_data=data.validation_dataset(to_labels),
                    epochs=stage.epochs,
                    initial_epoch=first_epoch,
                    steps_per_epoch=data.steps,
                    class_weight=stage.class_weight,
                    shuffle=False,  # the dataset (or the cache's epoch order) decides
                    callbacks=cbs,
                    verbose=self.verbose,
                )
                result.train_seconds = time.perf_counter() - t0
            result.stopped_early = early.stopped or stopped
            result.epochs_run = len(next(iter(result.history.values()), []))
            if averaged.raw:  # the last epoch's raw weights on validation, before the best
                result.without_ema = _validate_raw(
                    fit_model, optimizer, averaged.raw, data.validation_dataset(to_labels)
                )
            _keep(result, stage, early, keep_best, validation is not None, changing)
            if early.weights is None and stage.ema is not None:
                # fit ends with the averages written in; a resume past the last epoch too.
                optimizer.finalize_variable_values(fit_model.trainable_variables)
        if not data.cached:
            self.counter.count += result.epochs_run - first_epoch  # one iterator an epoch
        images = data.examples * (result.epochs_run - first_epoch)
        result.images_per_second = images / result.train_seconds if result.train_seconds else 0.0
        return result, frozen

    def _state(self, stage: int, train_iterations: int) -> CheckpointState:
        """The checkpoint state at the start of ``stage``."""
        return CheckpointState(
            stage_names=[s.name for s in self.stages],
            stage=stage,
            train_iterations=train_iterations,
            completed=list(self.results),
            frozen=list(self.frozen),
            settings=self.settings.to_dict(),
        )

    def _save(self, state: CheckpointState, optimizer: Any) -> None:
        if self.run_path is not None and self.writes:
            save_checkpoint(self.run_path, state, self.model, optimizer)

    def _callbacks(
        self,
        index: int,
        result: StageResult,
        early: BestEpoch,
        state: CheckpointState,
        resuming: bool,
    ) -> list[Any]:
        cbs: list[Any] = [History(result.history), early]
        if self.run_path is not None and self.writes:
            self.run_path.mkdir(parents=True, exist_ok=True)
            name = f"{index}_{self.stages[index].name}"
            csv = str(self.run_path / f"{name}.csv")
            cbs.append(keras.callbacks.CSVLogger(csv, append=resuming))
            if _tensorboard_available():
                logs = str(self.run_path / "logs" / name)
                cbs.append(keras.callbacks.TensorBoard(logs, write_graph=False, profile_batch=0))
            else:
                log.warning("TensorBoard is not installed (pip install tensorboard); no TB logs.")
            cbs.append(Checkpoint(self.run_path, self.model, state, result.history, early))
        return cbs + self.callbacks


def _snapshot(changing: Sequence[tuple[str, Any]], optimizer: Any) -> dict[str, np.ndarray]:
    """A copy of the variables a stage can change, ``{manifest path: array}``; the trained
    ones as their moving average when the optimizer keeps one (``Stage.ema``)."""
    averages = {id(v): a for v, a in averaged_pairs(optimizer)}
    return {path: np.array(averages.get(id(v), v)) for path, v in changing}


def _validate_raw(
    fit_model: keras.Model, optimizer: Any, raw: dict[int, np.ndarray], validation: Any
) -> dict[str, float]:
    """Validation metrics of the raw (not averaged) weights in ``raw``; the averages that
    ``fit`` left in the model are put back afterwards."""
    pairs = averaged_pairs(optimizer)
    averaged = {id(v): np.array(v) for v, _ in pairs}
    for v, _ in pairs:
        assign_in_place(v, raw[id(v)])
    try:
        logs = fit_model.evaluate(validation, verbose=0, return_dict=True)
    finally:
        for v, _ in pairs:
            assign_in_place(v, averaged[id(v)])
    return {f"val_{k}": float(value) for k, value in logs.items()}


def _keep(
    result: StageResult,
    stage: Stage,
    early: BestEpoch,
    keep_best: bool,
    has_validation: bool,
    changing: Sequence[tuple[str, Any]],
) -> None:
    """Ends the stage with its best epoch's weights (``keep_best``) or its last; records
    which epoch was kept and why in ``result``.

    Only the variables the stage could change are written: frozen ones keep their bytes.
    """
    result.monitor, result.ema = early.monitor, stage.ema
    if early.best_epoch is not None:
        result.best_epoch, result.best_value = early.best_epoch, float(early.best)
    last = result.epochs_run
    averaged = ", moving average of the weights" if stage.ema is not None else ""
    if keep_best and early.weights is not None:
        variables = dict(changing)
        unknown = sorted(set(early.weights) - set(variables))
        if unknown:
            raise InvalidValueError(
                f"The checkpoint's best weights name variables stage {stage.name!r} does not "
                f"train ({unknown[:3]}); resume with the same recipe or start a new run "
                "directory."
            )
        for path, value in early.weights.items():
            assign_in_place(variables[path], value)
        result.kept_epoch = early.best_epoch
        best = f"{early.monitor} {early.best:.4g}"
        result.kept_reason = (
            f"epoch {early.best_epoch}, the last, had the best {best}{averaged}"
            if early.best_epoch == last
            else f"epoch {early.best_epoch} of {last} restored: the best {best}{averaged}"
        )
        return
    if not has_validation:
        why = "no validation split to choose another"
    elif not stage.restore_best:
        why = "restore_best is off"
    else:
        why = f"no epoch had a finite {early.monitor}"
    result.kept_epoch = last
    result.kept_reason = f"the last epoch, {last} ({why}){averaged}"


def _tensorboard_available() -> bool:
    import importlib.util

    # Keras' TensorBoard callback writes through TensorFlow's summary ops.
    find = importlib.util.find_spec
    return find("tensorboard") is not None and find("tensorflow") is not None
