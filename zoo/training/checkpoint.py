"""The fine-tuning checkpoint: where a run stands, with its weights, in one atomic file.

``<run_dir>/checkpoints/last.npz`` is replaced after every epoch (``zoo.files.atomic_path``:
fsynced, then renamed, so even ``kill -9`` leaves the previous or the new file whole). It
holds

* ``state``: the :class:`CheckpointState` as JSON (UTF-8 bytes);
* ``model/<variable path>``: every model variable, by its Keras path;
* ``optimizer/<variable path>``: the optimizer's variables (iterations, moments, ...),
  their paths without the optimizer's own name;
* ``best/<manifest path>``: the stage's best epoch so far, the variables it can change
  (``zoo.fingerprint`` paths), restored when the stage ends.

Variables are matched by path, not position, so a model whose variables are created in
another order still resumes, and a different model is refused with every mismatch named.
Plain numpy: any Keras backend reads and writes it.
"""

from __future__ import annotations

import json
import logging
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import InvalidValueError, ZooError
from zoo.files import atomic_path
from zoo.training.distribute import assign_in_place
from zoo.training.stages import StageResult

log = logging.getLogger("zoo.training")

CHECKPOINT_NAME = "last.npz"
FORMAT_VERSION = 2
_MODEL, _OPTIMIZER, _BEST = "model/", "optimizer/", "best/"


class CorruptCheckpointError(InvalidValueError):
    """A checkpoint file that cannot be read back (truncated, damaged)."""


@dataclass
class CheckpointState:
    """Where a :func:`zoo.fine_tune` call stands.

    Attributes:
        stage_names: names of all the call's stages (a resume must pass the same).
        stage: the stage to resume (``len(stage_names)`` when all are complete).
        epoch: complete epochs of that stage.
        train_iterations: iterations of the training dataset made before that stage
            began (or, once it is complete, before the next one), replayed on resume.
        completed: results of the stages before ``stage``.
        frozen: per completed stage, the manifest paths its policy froze.
        history: per-epoch metrics of the stage in progress.
        best, wait, stopped: the best ``monitor`` value so far, epochs since, and whether
            early stopping ended the stage in progress.
        best_epoch: the stage's best epoch so far (1-based), whose weights the file holds
            under ``best/``; None before any.
        settings: the mixed precision / XLA settings (``SettingsProbe.to_dict()``), so a
            resumed ``"auto"`` run keeps the interrupted one's choice.
    """

    stage_names: list[str]
    stage: int = 0
    epoch: int = 0
    train_iterations: int = 0
    completed: list[StageResult] = field(default_factory=list)
    frozen: list[set[str]] = field(default_factory=list)
    history: dict[str, list[float]] = field(default_factory=dict)
    best: float = math.inf
    wait: int = 0
    stopped: bool = False
    settings: dict[str, Any] | None = None
    best_epoch: int | None = None

    def to_json(self) -> str:
        d = dict(vars(self), version=FORMAT_VERSION)
        d["completed"] = [r.to_dict() for r in self.completed]
        d["frozen"] = [sorted(s) for s in self.frozen]
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str, path: Path) -> CheckpointState:
        d = json.loads(text)
        if d.pop("version", None) != FORMAT_VERSION:
            raise InvalidValueError(
                f"The checkpoint {path} was written by another version of zoo; "
                "start a new run directory."
            )
        d["completed"] = [StageResult.from_dict(r) for r in d["completed"]]
        d["frozen"] = [set(p) for p in d["frozen"]]
        return cls(**d)


def checkpoint_path(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / CHECKPOINT_NAME


def _path(variable: Any, prefix: str) -> str:
    """The variable's path; an optimizer's without its own name (``adam_2/...``), which
    counts the optimizers made in the process."""
    return variable.path.split("/", 1)[-1] if prefix == _OPTIMIZER else variable.path


def _named(variables: Any, prefix: str) -> dict[str, np.ndarray]:
    """``{prefix + path: value}``; a repeated path gets ``#2``, ``#3``... in order."""
    named: dict[str, np.ndarray] = {}
    for v in variables:
        name = prefix + _path(v, prefix)
        k = 1
        while name in named:
            k += 1
            name = f"{prefix}{_path(v, prefix)}#{k}"
        named[name] = np.asarray(v)
    return named


def save_checkpoint(
    run_dir: Path,
    state: CheckpointState,
    model: Any,
    optimizer: Any,
    best: dict[str, np.ndarray] | None = None,
) -> Path:
    """Writes ``state``, the model's variables, ``optimizer``'s (if any) and the best
    epoch's weights (``{manifest path: array}``, if any), atomically."""
    arrays = _named(model.variables, _MODEL)
    if optimizer is not None:
        arrays.update(_named(optimizer.variables, _OPTIMIZER))
    arrays.update({_BEST + path: value for path, value in (best or {}).items()})
    arrays["state"] = np.frombuffer(state.to_json().encode(), dtype=np.uint8)
    path = checkpoint_path(run_dir)
    needed = sum(a.nbytes for a in arrays.values())
    with atomic_path(path, needed=needed) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return path


def load_checkpoint(
    run_dir: Path, model: Any
) -> tuple[CheckpointState, dict[str, np.ndarray]] | None:
    """Loads the model's weights; returns the state and the saved optimizer variables
    (``optimizer/`` keys) and best weights (``best/`` keys, see :func:`best_weights`).

    Returns None (with a warning) when there is no checkpoint.

    Raises:
        InvalidValueError: the checkpoint was written for another model (every missing,
            unexpected or reshaped variable is named) or by another version of zoo.
        CorruptCheckpointError: the file cannot be read (truncated, not a zip, a damaged
            member): never a silent start from the beginning.
    """
    path = checkpoint_path(run_dir)
    if not path.exists():
        log.warning("resume=True but no checkpoint at %s; starting from the beginning", path)
        return None
    try:
        with np.load(path) as data:
            state = CheckpointState.from_json(bytes(data["state"]).decode(), path)
            saved = {k: data[k] for k in data.files if k != "state"}
    except ZooError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, TypeError) as error:
        raise CorruptCheckpointError(
            f"The checkpoint {path} is corrupt or truncated ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no detail'}), so the run cannot "
            f"resume from it; nothing was loaded. Start a new run directory, or delete {path} "
            "to resume this one from its first epoch."
        ) from error
    values = _assignments(model.variables, _MODEL, saved, path)
    for v, value in values:
        assign_in_place(v, value)
    optimizer = {k: a for k, a in saved.items() if k.startswith((_OPTIMIZER, _BEST))}
    return state, optimizer


def best_weights(saved: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """The best epoch's weights in :func:`load_checkpoint`'s second value, or None."""
    best = {k[len(_BEST) :]: a for k, a in saved.items() if k.startswith(_BEST)}
    return best or None


def _assignments(
    variables: Any, prefix: str, saved: dict[str, np.ndarray], path: Path
) -> list[tuple[Any, np.ndarray]]:
    """Pairs each variable with its saved value; all-or-nothing, every problem listed."""
    names = list(_named(variables, prefix))
    ours = {k: a for k, a in saved.items() if k.startswith(prefix)}
    missing = [n[len(prefix) :] for n in names if n not in ours]
    unexpected = [n[len(prefix) :] for n in ours if n not in set(names)]
    shapes = [
        f"{n[len(prefix) :]} {tuple(ours[n].shape)} -> {tuple(v.shape)}"
        for n, v in zip(names, variables, strict=True)
        if n in ours and tuple(ours[n].shape) != tuple(v.shape)
    ]
    problems = [
        f"{label}: {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes))
        if items
    ]
    if problems:
        raise InvalidValueError(
            f"The checkpoint {path} was written for another model; resume with the same "
            f"recipe or start a new run directory. Variables {'; '.join(problems)}."
        )
    return [(v, ours[n]) for n, v in zip(names, variables, strict=True)]


def restore_optimizer(optimizer: Any, saved: dict[str, np.ndarray]) -> bool:
    """Assigns the saved optimizer variables by path; False (and a warning) if they do not fit."""
    if not saved:
        return False
    try:
        values = _assignments(optimizer.variables, _OPTIMIZER, saved, Path("optimizer state"))
    except InvalidValueError as err:
        log.warning("Optimizer state in the checkpoint does not fit; starting it afresh. %s", err)
        return False
    for v, value in values:
        assign_in_place(v, value)
    return True
