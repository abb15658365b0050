"""Runs a recipe end to end: data -> classifier -> stages -> test -> export -> verify -> report.

"Test" is a split no training decision saw: the source's own test split, or
``[data].test_fraction`` of the training images held out (by default
``recipes.config.DEFAULT_TEST_FRACTION`` when the source has no test split). Only when the
recipe says ``[data] evaluate_on = "validation"`` is the final evaluation on the
validation split, and the report then calls it that.

``zoo run RECIPE [--out DIR] [--resume] [--set key=value ...]`` calls :func:`run_recipe`.
The run directory (default ``runs/<recipe>-<timestamp>``) holds::

    recipe.toml            the recipe as run (overrides applied, every default explicit)
    source_manifest.json   the pretrained weights' manifest, taken right after loading
    logs/run.log           what the runner printed (logs/<stage>/: TensorBoard, if installed)
    <index>_<stage>.csv    per-epoch metrics of each stage (Keras CSVLogger)
    checkpoints/last.npz   weights + optimizer state after every epoch: what --resume reads
    export/                the verified SavedModel (absent when verification failed)
    report.json, report.md, plots/*.png

A run holds the lock ``.zoo-run.lock`` in its directory (``fcntl.flock``, released when
the process ends, even by ``kill -9``) from start to end, ``--resume`` included: a second
``zoo run`` on the same directory is refused with one line naming the holder's PID.

A crash (even ``kill -9``) loses at most the epoch in progress: ``--resume`` reads the
run directory's recipe.toml and source manifest, rebuilds the model and lets
``zoo.training.fine_tune(resume=True)`` continue from the last complete epoch. With
``[run].deterministic = true`` a resumed run ends with the same weights as one never
interrupted.

Many devices: ``[run] distribute`` picks a ``tf.distribute`` strategy
(``zoo.training.distribute``). The model is built inside its scope, ``[data] batch_size`` is
the global batch (it must divide among the replicas), and only the chief of a multi-worker
cluster writes (the run directory, checkpoints, the export and the report); the other
workers write nothing and on ``--resume`` read the chief's run directory (shared storage).
``[run] logical_cpu_devices`` splits the CPU first, a testing aid for ``"mirrored"``
without GPUs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recipes.config import DEFAULT_TEST_FRACTION, Recipe, load_recipe, recipe_to_toml
from recipes.model_card import write_model_card
from recipes.report import (
    DataReport,
    RunReport,
    SettingsReport,
    StageReport,
    VerifyReport,
    write_report,
)
from zoo.errors import ZooError
from zoo.files import exclusive_lock, write_text_atomic

__all__ = ["RunError", "RunResult", "default_run_dir", "run_recipe"]

EXPORT_DIR = "export"
RUN_LOCK = ".zoo-run.lock"
# The highest-loss images drawn in the report's grid (report.json lists more).
TOP_LOSS_GRID = 16


class RunError(ZooError, ValueError):
    """A run that cannot start as asked (run directory clash, nothing to resume, no split
    to evaluate on)."""


@dataclass
class RunResult:
    """What :func:`run_recipe` did.

    Attributes:
        run_dir: the run directory.
        exit_code: 0 when the run finished (and the export verified, if enabled); 1 when
            verification failed (no export is left at ``run_dir / "export"``).
        report: the run's report (``report.json`` is ``report.to_dict()``).
        paths: name -> written file (``json``, ``markdown``, plots, ``export``).
    """

    run_dir: Path
    exit_code: int
    report: RunReport
    paths: dict[str, Path] = field(default_factory=dict)


def default_run_dir(recipe: Recipe, root: str | os.PathLike = "runs") -> Path:
    """``runs/<recipe name>-<YYYYmmdd-HHMMSS>`` under ``root``."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{recipe.name}-{stamp}"


def _latest_run_dir(name: str, root: Path = Path("runs")) -> Path:
    candidates = sorted(root.glob(f"{name}-*/recipe.toml"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise RunError(
            f"--resume: no earlier run of {name!r} under {root}/; pass --out RUN_DIR "
            "with the run directory to continue."
        )
    return candidates[-1].parent


def _prepare_run_dir(
    recipe: Recipe,
    out: str | os.PathLike | None,
    resume: bool,
    source: str,
    writes: bool = True,
    held: contextlib.ExitStack | None = None,
) -> tuple[Recipe, Path]:
    """Creates (or, with ``resume``, reopens) the run directory; returns the recipe to run.

    A process that writes takes the directory's lock (:data:`RUN_LOCK`) into ``held``
    (when given) before it looks at what the directory holds, and removes what a killed
    export left there (``recipes.export.remove_leftovers``). A process that does not write
    (``writes=False``: a multi-worker cluster's non-chief) only reads it: the chief's
    recipe on a resume, nothing on a fresh start.
    """
    if resume:
        run_dir = Path(out) if out is not None else _latest_run_dir(recipe.name)
        if writes and run_dir.is_dir() and held is not None:
            _take(run_dir, held)
        saved = run_dir / "recipe.toml"
        if not saved.is_file():
            raise RunError(
                f"--resume: {run_dir} holds no recipe.toml, so there is no run to continue; "
                "run without --resume to start one" + ("" if writes else _NON_CHIEF_RESUME) + "."
            )
        recorded = load_recipe(saved)
        if recorded.model_dump(exclude={"name"}) != recipe.model_dump(exclude={"name"}):
            raise RunError(
                f"--resume: the recipe differs from the one {run_dir} was started with "
                f"({saved}); resume with the same recipe and --set values, or start a new run."
            )
        return recorded, run_dir
    run_dir = Path(out) if out is not None else default_run_dir(recipe)
    if not writes:
        return recipe, run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    if held is not None:
        _take(run_dir, held)
    if (run_dir / "recipe.toml").exists():
        raise RunError(
            f"{run_dir} already holds a run; add --resume to continue it, or pick another --out."
        )
    write_text_atomic(
        run_dir / "recipe.toml", f"# recipe as run, from {source}\n" + recipe_to_toml(recipe)
    )
    return recipe, run_dir


def _take(run_dir: Path, held: contextlib.ExitStack) -> None:
    """Locks ``run_dir`` for as long as ``held`` lasts; clears a killed export's leftovers."""
    from recipes.export import export_lock, remove_leftovers

    held.enter_context(exclusive_lock(run_dir / RUN_LOCK, f"the run directory {run_dir}"))
    with export_lock(run_dir / EXPORT_DIR):
        remove_leftovers(run_dir / EXPORT_DIR)


_NON_CHIEF_RESUME = (
    " (a multi-worker cluster's other workers resume from the chief's run directory: "
    "give them the same --out on shared storage, or a copy of it)"
)


class _Log:
    """Prints and appends to ``logs/run.log`` (``path`` None: prints only)."""

    def __init__(self, path: Path | None, echo: Callable[[str], None] | None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.echo = echo

    def __call__(self, message: str) -> None:
        stamp = _dt.datetime.now().strftime("%H:%M:%S")
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(f"{stamp} {message}\n")
        if self.echo is not None:
            self.echo(message)


@contextlib.contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - start


def run_recipe(
    recipe: str | os.PathLike,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    overrides: Iterable[str] = (),
    echo: Callable[[str], None] | None = print,
) -> RunResult:
    """Runs a recipe file or built-in recipe end to end.

    Args:
        recipe: a ``.toml`` path or a built-in name (``recipes.config.catalog_names()``).
        out: the run directory; default ``runs/<name>-<timestamp>``.
        resume: continue the interrupted run in ``out`` (default: the newest run of this
            recipe under ``runs/``) from its last complete epoch.
        overrides: ``key.path=value`` strings applied before validation.
        echo: where progress lines go besides ``logs/run.log`` (``None``: nowhere).

    Returns:
        A :class:`RunResult`; ``exit_code`` 1 means verification failed.

    Raises:
        RecipeError: the recipe is invalid (raised before anything runs).
        RunError: ``out`` already holds a run (without ``resume``), or nothing to resume.
        zoo.files.LockedError: another process is running in ``out`` (its PID is named).
        FileNotFoundError: no such recipe.
    """
    with contextlib.ExitStack() as held:  # the run directory's lock, to the run's end
        return _run_recipe(recipe, out, resume, overrides, echo, held)


def _run_recipe(
    recipe: str | os.PathLike,
    out: str | os.PathLike | None,
    resume: bool,
    overrides: Iterable[str],
    echo: Callable[[str], None] | None,
    held: contextlib.ExitStack,
) -> RunResult:
    wall_start = time.perf_counter()
    given = load_recipe(recipe, overrides)
    writes = _writes_run_dir(given)
    recipe_cfg, run_dir = _prepare_run_dir(given, out, resume, str(recipe), writes, held)
    log = _Log(run_dir / "logs" / "run.log" if writes else None, echo)
    log(f"{'resuming' if resume else 'starting'} {recipe_cfg.name} in {run_dir}")
    timings: dict[str, float] = {}
    _configure_runtime(recipe_cfg, log)
    strategy, distributed = _distribution(recipe_cfg, log)

    with _timed(timings, "load data"):
        data, test_fraction, test_split = _load_data(recipe_cfg, log)
    with _timed(timings, "build model"):
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            model = _build_model(recipe_cfg, data.class_names)
        source_manifest = _source_manifest(model, run_dir, resume, writes)
    with _timed(timings, "fine-tune"):
        if recipe_cfg.model.head.type == "knn":
            result = _fit_knn(recipe_cfg, model, data, log)
        else:
            result = _fine_tune(recipe_cfg, model, data, run_dir, resume, log, strategy)
    # Evaluation and export use a one-device copy: a SavedModel records distributed
    # variables under other names, and predict on one device sees every image once.
    single = _unreplicated(model)
    with _timed(timings, "evaluate"):
        test = _evaluate(recipe_cfg, single, data, log)
    verify: dict[str, Any] = {}
    export_path: Path | None = None
    if recipe_cfg.export.enabled and distributed.is_chief:
        export_path, verify = _export_and_verify(
            recipe_cfg,
            single,
            run_dir,
            source_manifest,
            result,
            timings,
            log,
            calibration=test.get("calibration"),
        )
    deployment: list[dict[str, Any]] = []
    if export_path is not None and len(recipe_cfg.export.formats) > 1:
        with _timed(timings, "deploy"):
            deployment = _deploy(recipe_cfg, single, data, export_path, test, log)
    report = _assemble_report(
        recipe_cfg,
        model,
        _data_report(recipe_cfg, data, test_fraction, test_split),
        result,
        test,
        VerifyReport.from_dict(verify),
        export_path,
        timings,
        resume,
        wall_seconds=time.perf_counter() - wall_start,
    )
    if deployment:
        report = dataclasses.replace(report, deployment=deployment)
    if not distributed.is_chief:
        log("done: this worker is not the chief, which writes the export and the report")
        return RunResult(run_dir, 0, report, {})
    grid = [e["index"] for e in test.get("top_losses", [])[:TOP_LOSS_GRID]]
    paths = write_report(report, run_dir, _images_at(recipe_cfg, data, test["split"], grid))
    if export_path is not None:
        paths["export"] = export_path
        write_model_card(export_path)  # again, now with the report's splits and top-1
    failed = bool(verify) and not verify.get("passed", False)
    score = report.score
    log(
        f"done in {report.wall_seconds:.0f} s: {report.headline} "
        f"{'-' if score is None else f'{score:.4f}'}, "
        f"verification {'FAILED' if failed else 'passed' if verify else 'not run'}; "
        f"report: {paths['markdown']}"
    )
    return RunResult(run_dir, 1 if failed else 0, report, paths)


# ---------------------------------------------------------------------------------------
# Steps. Each is small so that a failure points at one step.


def _writes_run_dir(recipe: Recipe) -> bool:
    """False on a multi-worker cluster's non-chief: it writes nothing (TF_CONFIG says,
    checked here before anything starts), and on a resume reads the chief's run directory."""
    if recipe.run.distribute != "multi_worker":
        return True
    from zoo.training.distribute import is_chief_task, read_tf_config

    return is_chief_task(read_tf_config())


def _configure_runtime(recipe: Recipe, log: _Log) -> None:
    import keras

    if recipe.run.logical_cpu_devices is not None:  # before anything starts TensorFlow
        from zoo.training.distribute import configure_logical_cpus

        configure_logical_cpus(recipe.run.logical_cpu_devices)
        log(f"CPU split into {recipe.run.logical_cpu_devices} logical devices (a testing aid)")
    keras.utils.set_random_seed(recipe.run.seed)
    if recipe.run.deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
        log("op determinism on: runs and resumes are bitwise reproducible")


def _distribution(recipe: Recipe, log: _Log) -> tuple[Any, Any]:
    """``[run] distribute`` as a strategy (or None) and its ``DistributionInfo``; the global
    batch checked against the replicas before any data loads."""
    from zoo.training.distribute import check_global_batch, resolve_distribution

    strategy, info = resolve_distribution(recipe.run.distribute)
    check_global_batch(recipe.data.batch_size, info, "[data] batch_size")
    if strategy is not None:
        log(
            f"distribute: {info.strategy}, {info.replicas} replicas, global batch "
            f"{recipe.data.batch_size} ({info.per_replica_batch(recipe.data.batch_size)} "
            "per replica), learning rates as written"
        )
    return strategy, info


def _unreplicated(model: Any) -> Any:
    from zoo.training.distribute import unreplicated

    return unreplicated(model)


def _source(source: str) -> str:
    """``zoo.data`` source string; a bare path to an existing folder means ``folder:PATH``."""
    if ":" not in source and Path(source).is_dir():
        return f"folder:{source}"
    return source


def _load_data(recipe: Recipe, log: _Log) -> tuple[Any, float | None, str]:
    """The ``zoo.data`` source, with a held-out test split unless validation is asked for.

    Returns:
        The DataSource, the ``test_fraction`` it was loaded with (None: the source's own
        test split, or none), and where its test split came from, in words.

    Raises:
        RunError: the split to evaluate on is empty or missing.
    """
    from zoo import data as zoo_data

    cfg = recipe.data
    source = _source(cfg.source)
    options: dict[str, Any] = {"validation_fraction": cfg.validation_fraction, "seed": cfg.seed}
    for key in ("train_size", "per_class", "test_fraction"):
        if getattr(cfg, key) is not None:
            options[key] = getattr(cfg, key)
    options.update(cfg.options)
    asked = options.get("test_fraction")
    wants_test = cfg.evaluate_on == "test" and asked is None
    if wants_test and source.startswith("folder:"):  # a folder never has a test split
        options["test_fraction"] = DEFAULT_TEST_FRACTION
    data = zoo_data.load(source, **options)
    if wants_test and data.test is None:  # e.g. tfds:tf_flowers, which has only "train"
        options["test_fraction"] = DEFAULT_TEST_FRACTION
        data = zoo_data.load(source, **options)
    test_split = _test_split_text(asked, options.get("test_fraction"), data, source)
    _check_label_kind(recipe, data)
    if data.split(cfg.evaluate_on) is None:
        raise RunError(
            f"[data] evaluate_on = {cfg.evaluate_on!r}, but {source} has no {cfg.evaluate_on} "
            "split; set [data].test_fraction (or validation_fraction) above 0."
        )
    log(
        f"data {data.source}: {len(data.class_names)} classes, "
        f"{_count(data, 'train')} train / {_count(data, 'validation')} validation / "
        f"{_count(data, 'test')} test images, {len(data.skipped)} files skipped; "
        f"test split: {test_split}"
    )
    return data, options.get("test_fraction"), test_split


def _check_label_kind(recipe: Recipe, data: Any) -> None:
    """A multi-label head needs multi-hot labels and a single-label head class indices.

    Raises:
        RunError: the head and the data disagree.
    """
    if recipe.model.head.multi_label and not data.multi_label:
        raise RunError(
            f"[model.head] multi_label = true, but {data.source} gives one class per image; "
            "point [data].options.labels_csv at a CSV of path,label1;label2 rows, or set "
            "multi_label = false."
        )
    if data.multi_label and not recipe.model.head.multi_label:
        raise RunError(
            f"{data.source} gives several labels per image (multi-hot), but the head is "
            "single-label; set [model.head] multi_label = true."
        )


def _test_split_text(asked: float | None, used: float | None, data: Any, source: str) -> str:
    """Where the test split came from, for the log and the report."""
    if used is None:
        return "the source's own test split" if data.test is not None else "none"
    if asked is not None:
        return f"{used:.0%} of the training images held out ([data].test_fraction)"
    return (
        f"{used:.0%} of the training images held out (default: {source} has no test split; "
        "[data].test_fraction sets the share)"
    )


def _count(data: Any, split: str) -> int | None:
    """Examples in a split; counted by iterating where the source does not know."""
    known = data.num_examples(split)
    if known is not None:
        return known
    dataset = data.split(split)
    return None if dataset is None else int(dataset.reduce(0, lambda count, _: count + 1))


def _build_model(recipe: Recipe, class_names: list[str]) -> Any:
    from zoo.classifier import build_classifier
    from zoo.heads import HEADS

    head = HEADS[recipe.model.head.type](**recipe.model.head.kwargs())
    return build_classifier(
        recipe.model.backbone,
        num_classes=len(class_names),
        head=head,
        weights=recipe.model.weights_arg,
        input_shape=recipe.input_shape(),
        class_names=list(class_names),
        multi_label=recipe.model.head.multi_label,
    )


def _source_manifest(model: Any, run_dir: Path, resume: bool, writes: bool) -> dict[str, Any]:
    """The manifest of the weights as loaded, before any training.

    Saved on the first start (by the chief only); a resumed run reads it back, so the
    frozen proof compares against the weights the run began with, not whatever a rebuild
    gives.
    """
    from zoo.fingerprint import manifest

    path = run_dir / "source_manifest.json"
    if resume and path.is_file():
        return json.loads(path.read_text())
    taken = manifest(model)
    if writes:
        write_text_atomic(path, json.dumps(taken, indent=1))
    return taken


def _stages(recipe: Recipe, num_classes: int, data: Any = None) -> list[Any]:
    """``zoo.Stage`` s from the recipe, each with its augmentation: the stage's own list of
    names, else ``[data].augment`` (``augment = false`` turns it off), and its class
    weights for ``data`` (the run's ``DataSource``: class names and training counts).

    Raises:
        RecipeError: a stage's ``class_weight`` does not fit the data.
    """
    from recipes.config import RecipeError
    from zoo import data as zoo_data

    if any(cfg.class_weight is not None for cfg in recipe.stages) and (
        data is None or recipe.model.head.multi_label
    ):
        raise RecipeError(
            [
                "stages: class_weight weighs single-label classes; a multi-label head has none "
                "(remove class_weight)"
            ]
        )

    size = tuple(recipe.input_shape()[:2])
    stages = []
    for index, cfg in enumerate(recipe.stages):
        names = cfg.augment if isinstance(cfg.augment, list) else list(recipe.data.augment)
        augment = None
        if cfg.augment is not False and names:
            strength = recipe.data.augment_strength
            augment = zoo_data.augmentation(
                strength.config(names),
                image_size=size,
                seed=recipe.run.seed + 100 * index,
                num_classes=num_classes,
                switch_prob=strength.switch_prob,
            )
        weights = None
        if cfg.class_weight is not None:
            counts = data.class_counts("train") if cfg.class_weight == "balanced" else None
            weights = cfg.class_weights(data.class_names, counts)
        stages.append(cfg.to_stage(augment, weights))
    return stages


def _batches(recipe: Recipe, data: Any, split: str, training: bool, replicas: int = 1) -> Any:
    """Batches of one split, through the source's own pipeline (in-memory fast path).

    With ``replicas`` > 1, a last batch with fewer images than replicas is dropped
    (:func:`_short_last_batch`): it would leave a replica with no images, which TensorFlow
    cannot run.
    """
    size = tuple(recipe.input_shape()[:2])
    drop = _short_last_batch(data, split, recipe.data.batch_size, replicas) > 0
    return data.pipeline(
        split, size, recipe.data.batch_size, training=training, drop_remainder=drop
    )


def _short_last_batch(data: Any, split: str, batch: int, replicas: int) -> int:
    """Images in ``split``'s last batch when that batch has fewer than ``replicas``, else 0."""
    n = data.num_examples(split) or 0
    left = n % batch
    return left if replicas > 1 and left < replicas else 0


def _fit_knn(recipe: Recipe, model: Any, data: Any, log: _Log) -> Any:
    """A ``knn`` head's stage: the training images embedded once and stored in the head.

    The backbone stays frozen (``freeze_backbone``, the only policy such a recipe has), so
    the result's frozen set is the whole backbone, which the export's proof then covers.
    """
    from zoo.caching import CacheInfo
    from zoo.fingerprint import frozen_paths
    from zoo.knn import fit_knn_head
    from zoo.training import FineTuneResult, StageResult

    start = time.perf_counter()
    fitted = fit_knn_head(model, _batches(recipe, data, "train", False), verbose=1)
    reason = f"kNN head: {fitted['stored']} training embeddings stored, k = {fitted['k']}"
    log(f"{reason} ({fitted['seconds']:.1f} s)")
    stages = [
        StageResult(
            name=stage.name,
            index=i,
            train_seconds=fitted["seconds"] if i == 0 else 0.0,
            images_per_second=fitted["stored"] / max(fitted["seconds"], 1e-9) if i == 0 else 0.0,
            cache=CacheInfo(reason=reason),
            kept_reason=reason,
        )
        for i, stage in enumerate(recipe.stages)
    ]
    return FineTuneResult(stages, frozen_paths(model), time.perf_counter() - start)


def _fine_tune(
    recipe: Recipe,
    model: Any,
    data: Any,
    run_dir: Path,
    resume: bool,
    log: _Log,
    strategy: Any = None,
) -> Any:
    from zoo.training import fine_tune

    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    for split in ("train", "validation"):
        if short := _short_last_batch(data, split, recipe.data.batch_size, replicas):
            log(
                f"distribute: the last {split} batch would hold {short} image(s), fewer than "
                f"the {replicas} replicas; those {short} are left out of every epoch"
            )
    validation = None
    if data.validation is not None:
        validation = _batches(recipe, data, "validation", False, replicas)
    fingerprint = "+".join(
        data.fingerprint(split)
        for split in ("train", "validation")
        if data.split(split) is not None
    )
    log(f"fine-tuning: {', '.join(s.name for s in recipe.stages)}")
    return fine_tune(
        model,
        _batches(recipe, data, "train", True, replicas),
        validation,
        _stages(recipe, len(data.class_names), data),
        run_dir=run_dir,
        resume=resume,
        **recipe.run.fine_tune_kwargs(),
        data_fingerprint=fingerprint,
        seed=recipe.run.seed,
        verbose=1,  # Keras progress bars
        distribution=strategy,
    )


def _logits(recipe: Recipe, model: Any, data: Any, split: str, flip: bool = False) -> Any:
    """Labels and logits of ``split`` (float32 ``(n, classes)``); with ``flip`` also the
    logits of the mirrored images (else None) and the seconds they took."""
    import numpy as np

    labels, logits, mirrored, seconds = [], [], [], 0.0
    for images, batch_labels in _batches(recipe, data, split, training=False):
        logits.append(np.asarray(model.predict_on_batch(images), dtype=np.float32))
        labels.append(np.asarray(batch_labels))
        if flip:
            start = time.perf_counter()
            mirror = np.ascontiguousarray(np.asarray(images)[:, :, ::-1, :])
            mirrored.append(np.asarray(model.predict_on_batch(mirror), dtype=np.float32))
            seconds += time.perf_counter() - start
    both = np.concatenate(mirrored) if flip else None
    return np.concatenate(labels), np.concatenate(logits), both, seconds


def _evaluate(recipe: Recipe, model: Any, data: Any, log: _Log) -> dict[str, Any]:
    """Top-1 and per-class metrics on the evaluation split; mAP and F1 for multi-label.

    With ``[evaluate] tta = ["flip"]`` the logits are the mean of the image's and its
    mirror's (the single view's top-1 is kept beside). With ``[evaluate] calibrate`` a
    temperature is fitted on the validation split's single-view logits (what the export
    outputs) and the expected calibration error measured on this split before and after.
    """
    import numpy as np

    from recipes.report import (
        calibration,
        classification_metrics,
        error_analysis,
        multilabel_metrics,
    )
    from recipes.text import format_cell

    split = recipe.data.evaluate_on
    # On the engine [run] inference_engine asks for: the same logits within the engine's
    # parity check (relative error <= 1e-5 against the model as built), often faster.
    folded, engine = _inference_model(recipe, model, data, split)
    log(f"evaluation engine: {engine.text()}")
    flip = "flip" in recipe.evaluate.tta
    labels, single, mirrored, tta_seconds = _logits(recipe, folded, data, split, flip)
    logits = single if mirrored is None else (single + mirrored) / 2
    threshold = recipe.model.head.decision_threshold
    if threshold is not None:
        # The head's sigmoid, in a form that cannot overflow.
        probabilities = 0.5 * (1.0 + np.tanh(logits.astype(np.float64) / 2))
        metrics = multilabel_metrics(labels, probabilities, data.class_names, threshold)
        metrics["engine"] = engine.to_dict()
        metrics["split"] = split
        log(
            f"{split} mAP {format_cell(metrics['mAP'], 4)}, F1 micro "
            f"{format_cell(metrics['f1_micro'], 4)} at threshold {threshold} on "
            f"{metrics['images']} images"
        )
        return metrics
    metrics = classification_metrics(labels, np.argmax(logits, axis=-1), data.class_names, logits)
    metrics["engine"] = engine.to_dict()
    if mirrored is not None:
        without = float(np.mean(np.argmax(single, axis=-1) == labels)) if len(labels) else None
        metrics["tta"] = {"views": ["image", "flip"], "top1_without": without}
        metrics["tta"]["seconds"] = tta_seconds
        log(f"{split} top-1 {format_cell(without, 4)} without test-time flip")
    identities = data.identities(split)
    if identities is not None and len(identities) != len(labels):
        identities = None  # not one per evaluated image: the list would point at others
    metrics.update(error_analysis(labels, logits, data.class_names, identities))
    metrics["split"] = split
    log(
        f"{split} top-1 {metrics['top1']:.4f} (top-5 {format_cell(metrics['top5'], 4)}, "
        f"balanced {format_cell(metrics['balanced_accuracy'], 4)}) on {metrics['images']} "
        "images"
    )
    if recipe.evaluate.calibrate and data.validation is not None and len(labels):
        fit_labels, fit_logits, _, _ = _logits(recipe, folded, data, "validation")
        metrics["calibration"] = {
            **calibration(fit_labels, fit_logits, labels, single),
            "fitted_on": "validation",
        }
        c = metrics["calibration"]
        log(
            f"calibration: temperature {c['temperature']:.3f} (fitted on validation), "
            f"{split} ECE {c['ece_before']:.4f} -> {c['ece_after']:.4f}"
        )
    return metrics


class _Forward:
    """A forward function with the ``predict_on_batch`` of the model it stands for."""

    def __init__(self, forward: Any) -> None:
        self.predict_on_batch = forward


def _inference_model(recipe: Recipe, model: Any, data: Any, split: str) -> tuple[Any, Any]:
    """The evaluated model on the engine ``[run] inference_engine`` picks (probed on the
    split's first batch, :func:`zoo.caching.engine.choose_engine`), and the choice."""
    import numpy as np

    from zoo.caching.engine import choose_engine

    first = next(iter(_batches(recipe, data, split, training=False)), None)
    sample = np.zeros((1, *recipe.input_shape()), np.float32) if first is None else first[0]
    forward, choice = choose_engine(
        model, np.asarray(sample), recipe.run.inference_engine, images=_count(data, split)
    )
    return _Forward(forward), choice


def _images_at(recipe: Recipe, data: Any, split: str, indices: list[int]) -> Any:
    """The evaluated images at ``indices`` of ``split``, in that order, as the model saw
    them (float32 0..255 ``(n, height, width, 3)``); None when ``indices`` is empty."""
    import numpy as np

    if not indices:
        return None
    wanted, found, start = set(indices), {}, 0
    for images, _ in _batches(recipe, data, split, training=False):
        images = np.asarray(images, np.float32)
        for i in wanted.intersection(range(start, start + len(images))):
            found[i] = images[i - start]
        start += len(images)
        if len(found) == len(wanted):
            break
    return np.stack([found[i] for i in indices])


def _export_and_verify(
    recipe: Recipe,
    model: Any,
    run_dir: Path,
    source_manifest: dict[str, Any],
    result: Any,
    timings: dict[str, float],
    log: _Log,
    calibration: dict[str, Any] | None = None,
) -> tuple[Path | None, dict[str, Any]]:
    """Exports to ``run_dir/export``; the export's own verification is the run's.

    ``calibration`` (the evaluation's temperature scaling) is recorded in
    ``metadata.json``; the exported outputs stay the model's own.

    ``export_saved_model`` writes into a staging folder, verifies it with the recipe's
    tolerance and only then moves it into place; a failure leaves nothing there. An
    older export (from an earlier attempt in this directory) is removed first, so after
    a failed verification no export is left at the target at all. Weights from the
    registry must be proven unchanged (against the registry's pinned file and the
    run's source manifest); "not proven" fails the run.
    """
    from recipes.export import ExportError, export_saved_model

    target = run_dir / EXPORT_DIR
    shutil.rmtree(target, ignore_errors=True)
    tolerance = {} if recipe.verify.tolerance is None else {"tolerance": recipe.verify.tolerance}
    try:
        with _timed(timings, "export"):
            exported = export_saved_model(
                model,
                target,
                source_manifest=source_manifest,
                frozen=set(result.frozen_in_all_stages),
                metadata=_export_metadata(recipe, calibration),
                require_proof=recipe.model.weights_arg == "imagenet",
                **tolerance,
            )
    except ExportError as error:
        shutil.rmtree(target, ignore_errors=True)
        verify = (
            _verify_dict(error.result)
            if error.result is not None
            else {
                "passed": False,
                "failures": [str(error).splitlines()[0]],
            }
        )
        log(f"verification FAILED, no export kept: {'; '.join(verify['failures'])}")
        return None, verify
    verify = _verify_dict(exported.verification)
    log(f"exported to {target}; verification passed ({len(verify['checks'])} checks)")
    return target, verify


def _export_metadata(recipe: Recipe, calibration: dict[str, Any] | None = None) -> dict[str, Any]:
    """``metadata.json`` extras: the recipe, a multi-label head's threshold, and the
    temperature fitted on validation, which every exported format's ``probabilities``
    apply (``softmax(logits / temperature)``; the logits stay as trained)."""
    metadata: dict[str, Any] = {"recipe": recipe.model_dump(mode="json")}
    if recipe.model.head.multi_label:
        metadata["threshold"] = recipe.model.head.decision_threshold
    if calibration:
        metadata["temperature"] = calibration["temperature"]
        metadata["calibration"] = {
            "fitted_on": calibration.get("fitted_on", "validation"),
            "ece_before": calibration.get("ece_before"),
            "ece_after": calibration.get("ece_after"),
        }
    return metadata


def _deploy(
    recipe: Recipe, model: Any, data: Any, export_path: Path, test: dict[str, Any], log: _Log
) -> list[dict[str, Any]]:
    """Writes ``[export] formats`` beside the SavedModel (:mod:`recipes.deploy`).

    int8 calibrates on the first training images (never test images); every format's
    top-1 is measured on the split the run evaluated on, streamed batch by batch.
    """
    from recipes.deploy import deploy

    split = recipe.data.evaluate_on
    results = deploy(
        export_path,
        recipe.export.formats,
        model,
        calibration=_calibration_images(recipe, data),
        evaluation=lambda: _batches(recipe, data, split, training=False),
        float_top1=test.get("top1"),
    )
    for r in results:
        log(
            f"deployed {r.file}: {r.bytes / 1e6:.2f} MB, parity {r.parity:.3g}, {split} "
            f"top-1 {r.top1:.4f}, batch-1 {r.latency_ms:.2f} ms, {r.images_per_s:.0f} images/s"
        )
    return [r.to_dict() for r in results]


def _calibration_images(recipe: Recipe, data: Any) -> Any:
    """The first ``CALIBRATION_IMAGES`` training images, unaugmented (never test images):
    float32 ``(n, height, width, 3)`` 0..255, or None when there are none."""
    import numpy as np

    from recipes.deploy import CALIBRATION_IMAGES

    calibration, count = [], 0
    for images, _ in _batches(recipe, data, "train", training=False):
        calibration.append(np.asarray(images, np.float32))
        count += len(calibration[-1])
        if count >= CALIBRATION_IMAGES:
            break
    return np.concatenate(calibration)[:CALIBRATION_IMAGES] if calibration else None


def run_deploy_inputs(path: str | os.PathLike, calibrate: bool = True) -> dict[str, Any] | None:
    """What ``zoo export RUN_DIR`` needs from a finished run: its data, read again.

    From the run's ``recipe.toml``: calibration images from the training split (as the
    run took them) and the split the run evaluated on, so every format's top-1 is measured
    as in the run; the float model's top-1 comes from ``report.json`` when there.

    Args:
        path: a run directory, or its ``export/`` directory.
        calibrate: read the calibration images (only ``tflite-int8`` needs them).

    Returns:
        ``deploy`` keyword arguments (``evaluation``, ``float_top1``, and with
        ``calibrate`` ``calibration``), or None when ``path`` is not inside a run
        directory (an export on its own).

    Raises:
        ZooError: the recipe's data cannot be loaded (as for ``zoo run``).
    """
    path = Path(path)
    run_dir = path.parent if (path.parent / "recipe.toml").is_file() else path
    if not (run_dir / "recipe.toml").is_file():
        return None
    recipe = load_recipe(run_dir / "recipe.toml")
    data, _, _ = _load_data(recipe, lambda message: None)
    report = run_dir / "report.json"
    test = json.loads(report.read_text()).get("test", {}) if report.is_file() else {}
    split = recipe.data.evaluate_on
    inputs: dict[str, Any] = {
        "evaluation": lambda: _batches(recipe, data, split, training=False),
        "float_top1": test.get("top1"),
    }
    if calibrate:
        inputs["calibration"] = _calibration_images(recipe, data)
    return inputs


def _verify_dict(outcome: Any) -> dict[str, Any]:
    """A VerifyResult as JSON-able report data."""
    return {
        "passed": bool(outcome.passed),
        "failures": [str(f) for f in outcome.failures],
        "checks": [
            {"name": c.name, "passed": c.passed, "detail": c.detail} for c in outcome.checks
        ],
        "num_variables": outcome.num_variables,
        "num_frozen": outcome.num_frozen,
        "max_abs_diff": outcome.max_abs_diff,
    }


def _data_report(
    recipe: Recipe, data: Any, test_fraction: float | None, test_split: str
) -> DataReport:
    return DataReport(
        source=recipe.data.source,
        train_images=_count(data, "train"),
        validation_images=_count(data, "validation"),
        test_images=_count(data, "test"),
        skipped=[{"path": str(p), "reason": str(r)} for p, r in data.skipped],
        test_fraction=test_fraction,
        test_split=test_split,
    )


def _settings_report(
    recipe: Recipe, result: Any, evaluation: dict[str, Any] | None = None
) -> SettingsReport:
    dist = getattr(result, "distribution", None) or {}
    replicas = int(dist.get("replicas", 1))
    batch = recipe.data.batch_size
    return SettingsReport(
        mixed_precision_asked=recipe.run.mixed_precision,
        jit_compile_asked=recipe.run.jit_compile,
        mixed_precision=result.mixed_precision,
        jit_compile=bool(result.jit_compile),
        probe=getattr(result, "settings_probe", None),  # set by fine_tune's "auto"
        distribute_asked=recipe.run.distribute,
        strategy=dist.get("strategy", "none"),
        replicas=replicas,
        workers=int(dist.get("workers", 1)),
        global_batch=batch,
        per_replica_batch=batch // replicas,
        logical_cpu_devices=recipe.run.logical_cpu_devices,
        inference_engine_asked=recipe.run.inference_engine,
        evaluation_engine=(evaluation or {}).get("engine"),
    )


def _assemble_report(
    recipe: Recipe,
    model: Any,
    data: DataReport,
    result: Any,
    evaluation: dict[str, Any],
    verify: VerifyReport,
    export_path: Path | None,
    timings: dict[str, float],
    resumed: bool,
    wall_seconds: float,
) -> RunReport:
    from zoo.classifier import classifier_info

    info = classifier_info(model)
    sizes = {v.path: math.prod(v.shape) for v in model.weights}  # parameters of each weight
    return RunReport(
        recipe=recipe.name,
        description=recipe.description,
        evaluated_on=evaluation["split"],
        top1=evaluation.get("top1"),
        metric="mAP" if recipe.model.head.multi_label else "top1",
        evaluation=evaluation,
        wall_seconds=wall_seconds,
        verify=verify,
        backbone=info["backbone"],
        weights=info.get("weights"),
        input_shape=list(recipe.input_shape()),
        class_names=list(info.get("class_names") or []),
        stages=[
            StageReport.from_result(cfg.policy_config(), got, sizes)
            for cfg, got in zip(recipe.stages, result.stages, strict=False)
        ],
        data=data,
        settings=_settings_report(recipe, result, evaluation),
        export=str(export_path) if export_path else None,
        timings=timings,
        resumed=resumed,
        environment=_environment(),
    )


def _environment() -> dict[str, Any]:
    import keras

    return {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }


def main_run(recipe: str, out: str | None, resume: bool, overrides: list[str]) -> int:
    """The ``zoo run`` subcommand's body; returns the exit code (0 ok, 1 verify failed)."""
    return run_recipe(recipe, out=out, resume=resume, overrides=overrides).exit_code
