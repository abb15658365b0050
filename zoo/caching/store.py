"""Where cached activations live: in memory, or past a byte budget as a memmap on disk.

Numpy only (no TensorFlow, no backend): a cache is an :class:`Activations` record of arrays.
Keys say what a cache depends on (:func:`prefix_key`) and give examples an order of their
own (:func:`example_keys`). On disk a split ``<label>`` is four files in one directory::

    <label>.x.bin            activations, raw bytes in the stored dtype (a memmap)
    <label>.y.npy            labels
    <label>.canonical.npy    the rows sorted by example key
    <label>.json             shape, dtype, batch size, pass seconds, engine; written last

Each file is written atomically (``zoo.files.atomic_path``) and the ``.json`` last, so a
directory without it is incomplete and never loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from zoo.caching.plan import CacheUnavailable, CutPlan, backbone_layer
from zoo.files import atomic_path, write_text_atomic

CACHE_DTYPES = ("float32", "bfloat16", "float16")
DEFAULT_CACHE_BUDGET_BYTES = 2 * 1024**3
_DISK_CHUNK_ROWS = 1024  # rows copied at a time when a (possibly memmapped) cache is saved


@dataclass
class Activations:
    """Cached activations of one split: ``x`` (N, h', w', c) and labels ``y`` (N, ...).

    ``x`` is an in-memory array or a read-only ``numpy`` memmap, its rows in the order the
    dataset yielded them. ``canonical`` lists the rows sorted by :func:`example_keys`, an
    order that does not depend on how the dataset shuffled this time; shuffled training
    permutes it, so a cache built in another process (a resumed run) gives the same batches.
    None means the stored order. ``seconds`` is the wall time one pass of the prefix over
    the data took when the cache was computed (kept with an on-disk cache): what every
    epoch of plain training would spend on it. ``engine`` is the inference engine that
    computed them and its probe (``zoo.caching.engine.EngineChoice.to_dict``), kept with
    an on-disk cache too; None when unknown.
    """

    x: np.ndarray
    y: np.ndarray
    location: str
    batch_size: int = 0
    canonical: np.ndarray | None = None
    seconds: float = 0.0
    engine: dict[str, Any] | None = None

    @property
    def nbytes(self) -> int:
        return int(self.x.nbytes + self.y.nbytes)

    @property
    def in_memory_bytes(self) -> int:
        """Bytes held in memory (0 for a memmap on disk)."""
        return self.nbytes if self.location == "memory" else 0


def numpy_dtype(name: str) -> Any:
    """The numpy dtype of a cache dtype name (bfloat16 through ``ml_dtypes``)."""
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(name)


# ----------------------------------------------------------------------------- keys


def prefix_key(
    model: keras.Model,
    plan: CutPlan,
    input_size: tuple[int, ...],
    data_fingerprint: str | None,
    dtype: str,
    engine: str = "auto",
) -> str:
    """sha256 naming the activations: backbone, weights, cut, input size, data, dtype and
    the inference engine asked for (``zoo.caching.engine``: engines agree within a
    relative error of 1e-5, not bit for bit).

    The weights are hashed from the prefix's variables (not only the recorded file hash:
    an earlier stage may have trained them).
    """
    h = hashlib.sha256()
    for layer in plan.prefix_layers:
        for v in layer.variables:
            h.update(v.path.encode())
            h.update(np.ascontiguousarray(np.asarray(v)).tobytes())
    backbone = backbone_layer(model)
    ident = {
        "backbone": backbone.name,
        "weights_file_sha256": (getattr(backbone, "zoo_weights", None) or {}).get("sha256"),
        "prefix_sha256": h.hexdigest(),
        "cut": plan.layer,
        "input_size": list(input_size),
        "data": data_fingerprint,
        "dtype": dtype,
        "engine": engine,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def example_keys(pixels: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each example's input bytes and label, shape ``(batch,)`` uint64.

    Sorting by it gives the examples an order of their own, whatever order a shuffled
    dataset yielded them in (identical examples tie, and their activations are identical).
    """
    pixels = np.ascontiguousarray(pixels)
    labels = np.ascontiguousarray(labels)
    keys = np.empty(len(pixels), np.uint64)
    for i in range(len(pixels)):
        h = hashlib.blake2b(pixels[i].tobytes(), digest_size=8)
        h.update(labels[i].tobytes())
        keys[i] = int.from_bytes(h.digest(), "little")
    return keys


# ----------------------------------------------------------------------------- writing


@dataclass
class ActivationWriter:
    """Collects batches of activations in memory, spilling to a memmap past the budget.

    Attributes:
        dtype: storage dtype, one of ``CACHE_DTYPES``.
        budget_bytes: largest size kept in memory.
        disk_dir: where an over-budget cache is written; None forbids spilling.
        label: the split (``"train"``, ``"validation"``): file names and progress bar.
        earlier_seconds: added to the pass's own time (a derived cache's base pass).
        engine: the inference engine's record, stored with the activations; the pass may
            set it while ``outputs`` runs (its engine is chosen on the first batch).
    """

    dtype: str
    budget_bytes: int
    disk_dir: Path | None
    label: str
    earlier_seconds: float = 0.0
    engine: dict[str, Any] | None = None

    def run(
        self,
        outputs: Iterator[tuple[np.ndarray, np.ndarray]],
        canonical: Callable[[], np.ndarray],
        batches: int | None,
        verbose: int,
    ) -> Activations:
        """Stores every ``(activations, labels)`` batch of ``outputs``; times the pass.

        ``canonical()`` is called after the last batch. A spilled cache is complete on
        disk (its ``.json`` written last) before this returns.

        Raises:
            CacheUnavailable: over budget without a ``disk_dir``.
        """
        start = time.perf_counter()
        bar = keras.utils.Progbar(batches, unit_name="batch")
        if verbose:
            print(f"Caching activations ({self.label}):")
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        held = count = first = 0
        out = np.zeros((0,), numpy_dtype(self.dtype))
        with contextlib.ExitStack() as stack:
            spill = None  # the open ``.x.bin`` (renamed into place on leaving) once over budget
            for i, (out, y) in enumerate(outputs):
                ys.append(y)
                first = first or len(out)
                count += len(out)
                if spill is None and held + out.nbytes > self.budget_bytes:
                    spill = self._open_spill(stack, xs)
                    xs.clear()
                if spill is None:
                    xs.append(out)
                    held += out.nbytes
                else:
                    spill.write(np.ascontiguousarray(out).tobytes())
                if verbose:
                    bar.update(i + 1)
        y = np.concatenate(ys) if ys else np.zeros((0,), np.int64)
        order = canonical()
        seconds = self.earlier_seconds + time.perf_counter() - start
        if spill is None:
            x = np.concatenate(xs) if xs else out
            return Activations(x, y, "memory", first, order, seconds, self.engine)
        shape = (count, *out.shape[1:])
        return _complete_on_disk(
            self.disk_dir, self.label, shape, self.dtype, y, order, first, seconds, self.engine
        )

    def _open_spill(self, stack: contextlib.ExitStack, held: list[np.ndarray]) -> Any:
        if self.disk_dir is None:
            raise CacheUnavailable(
                f"activations exceed the memory budget ({self.budget_bytes} bytes) and no "
                "cache directory is set"
            )
        tmp = stack.enter_context(atomic_path(self.disk_dir / f"{self.label}.x.bin"))
        spill = stack.enter_context(open(tmp, "wb"))  # noqa: SIM115  (closed by the stack)
        for chunk in held:
            spill.write(np.ascontiguousarray(chunk).tobytes())
        return spill


def _complete_on_disk(
    disk_dir: Path,
    label: str,
    shape: tuple[int, ...],
    dtype: str,
    y: np.ndarray,
    canonical: np.ndarray | None,
    batch_size: int,
    seconds: float = 0.0,
    engine: dict[str, Any] | None = None,
) -> Activations:
    """Writes labels, order and (last, marking the cache complete) the ``.json`` beside
    ``<label>.x.bin``; returns the activations opened as a read-only memmap."""
    with atomic_path(disk_dir / f"{label}.y.npy") as tmp:
        np.save(tmp, y)
    if canonical is not None:
        with atomic_path(disk_dir / f"{label}.canonical.npy") as tmp:
            np.save(tmp, canonical)
    meta = {
        "shape": list(shape),
        "dtype": dtype,
        "batch_size": batch_size,
        "seconds": seconds,
        "engine": engine,
    }
    write_text_atomic(disk_dir / f"{label}.json", json.dumps(meta))
    x = np.memmap(disk_dir / f"{label}.x.bin", dtype=numpy_dtype(dtype), mode="r", shape=shape)
    return Activations(x, y, str(disk_dir), batch_size, canonical, seconds, engine)


def save_activations(acts: Activations, disk_dir: Path, label: str, dtype: str) -> Activations:
    """Writes ``acts`` to ``disk_dir`` as :func:`load_activations` reads it back.

    The ``.json`` is written last, so an interrupted write is never loaded. Returns the
    on-disk copy (a read-only memmap); ``acts.seconds`` is kept with it.
    """
    with atomic_path(disk_dir / f"{label}.x.bin") as tmp, open(tmp, "wb") as f:
        for start in range(0, len(acts.x), _DISK_CHUNK_ROWS):  # ``x`` may be a large memmap
            f.write(np.ascontiguousarray(acts.x[start : start + _DISK_CHUNK_ROWS]).tobytes())
    return _complete_on_disk(
        disk_dir,
        label,
        acts.x.shape,
        dtype,
        acts.y,
        acts.canonical,
        acts.batch_size,
        acts.seconds,
        acts.engine,
    )


def load_activations(disk_dir: Path, label: str) -> Activations | None:
    """Opens a complete on-disk cache written by this module, or returns None."""
    meta_path = disk_dir / f"{label}.json"
    if not meta_path.exists():
        return None
    meta = json.loads(meta_path.read_text())
    x = np.memmap(
        disk_dir / f"{label}.x.bin",
        dtype=numpy_dtype(meta["dtype"]),
        mode="r",
        shape=tuple(meta["shape"]),
    )
    y = np.load(disk_dir / f"{label}.y.npy")
    order_path = disk_dir / f"{label}.canonical.npy"
    canonical = np.load(order_path) if order_path.exists() else None
    batch_size, seconds = int(meta.get("batch_size", 0)), float(meta.get("seconds", 0.0))
    return Activations(x, y, str(disk_dir), batch_size, canonical, seconds, meta.get("engine"))


def default_disk_dir(cache_dir: str | os.PathLike | None, key: str) -> tuple[Path, bool]:
    """Where an over-budget cache goes, and whether it is temporary (deleted after)."""
    if cache_dir is not None:
        return Path(cache_dir) / key[:16], False
    return Path(tempfile.mkdtemp(prefix="zoo-cache-")) / key[:16], True


def remove_dir(path: Path) -> None:
    """Deletes a temporary cache directory (and its temporary parent)."""
    shutil.rmtree(path.parent if path.parent.name.startswith("zoo-cache-") else path, True)
