"""Helpers shared by the benchmark measurements: timing, the machine, compiled calls.

Nothing here imports TensorFlow or Keras at module level: the orchestrator imports this
module too, and each measurement process picks its Keras backend (``KERAS_BACKEND``)
before Keras is first imported.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

SKIP_NEEDS_TF = "skipped: needs TensorFlow"


def has_tensorflow() -> bool:
    """Whether TensorFlow is importable here (found without importing it)."""
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        return False


def backend() -> str:
    """The Keras backend this process uses (imports Keras)."""
    import keras

    return keras.backend.backend()


def skipped(reason: str, **fields: Any) -> dict[str, Any]:
    """A measurement's result when it did not run: the reason plus its stable keys."""
    return {"skipped": reason, **fields}


def median(values: list[float]) -> float:
    """The median of ``values`` (a float, for JSON)."""
    return float(statistics.median(values))


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> dict[str, Any]:
    """Times ``fn()``: the first call (tracing/compiling included) apart, then ``repeats``.

    Args:
        fn: a call that blocks until its work is done (returns host values).
        repeats: timed calls after the warm-up, at least 1.
        warmup: untimed calls before the timed ones; the first is reported as
            ``first_call_seconds`` (compile/trace time plus one run).

    Returns:
        ``{"first_call_seconds", "seconds": [per call], "median_seconds"}``.
    """
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    for _ in range(max(warmup - 1, 0)):
        fn()
    seconds = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return {"first_call_seconds": first, "seconds": seconds, "median_seconds": median(seconds)}


def compiled(fn: Callable[..., Any], jit: bool = False) -> Callable[..., Any]:
    """``fn`` compiled the way the current backend does it.

    TensorFlow: ``tf.function`` (``jit_compile=jit``); JAX: ``jax.jit`` (always XLA);
    torch: ``fn`` unchanged.
    """
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=jit)
    if name == "jax":
        import jax

        return jax.jit(fn)
    return fn


def to_host(x: Any) -> Any:
    """Copies ``x`` to a numpy array, waiting for the device to finish."""
    import keras

    return keras.ops.convert_to_numpy(x)


def version(*dists: str) -> str | None:
    """The installed version of the first of ``dists`` that is installed, else None."""
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "fma")
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [w for w in wanted if w in flags]
    except OSError:
        pass
    return []


def cpu_isa(flags: list[str] | tuple[str, ...]) -> str:
    """The widest vector instruction set among a CPU's ``flags``, as results files name it.

    Args:
        flags: ``/proc/cpuinfo`` flag names (``machine_info()["cpu_flags"]``).

    Returns:
        ``"amx"`` (AMX tiles, with AVX-512 beside them), ``"avx512f"``, ``"avx2"``, or
        ``"unknown"`` where none of those is listed (another architecture, or flags that
        could not be read). The 2-core machines of these benchmarks come as ``avx2`` and
        ``avx512f`` (AMD EPYC) and ``amx`` (Intel Xeon), about 2x apart in speed.
    """
    names = set(flags)
    if names & {"amx_tile", "amx_bf16", "amx_int8"}:
        return "amx"
    for isa in ("avx512f", "avx2"):
        if isa in names:
            return isa
    return "unknown"


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _accelerators() -> list[str]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_info(keras_backend: str) -> dict[str, Any]:
    """Describes this machine without importing TensorFlow, Keras or JAX.

    Returns:
        CPU model, flags and ISA (:func:`cpu_isa`), cores, memory (GiB), accelerators
        (``nvidia-smi``), Python, TensorFlow / Keras / JAX / torch versions (None where
        absent), the Keras backend, the load average and the date (UTC, ISO 8601).
    """
    flags = _cpu_flags()
    return {
        "cpu": _cpu_model(),
        "cpu_flags": flags,
        "isa": cpu_isa(flags),
        "cores": cores(),
        "memory_gib": _memory_gib(),
        "accelerators": _accelerators(),
        "hostname": platform.node(),
        "python": platform.python_version(),
        "tensorflow": version("tensorflow", "tensorflow-cpu", "tf-nightly"),
        "keras": version("keras", "keras-nightly"),
        "jax": version("jax"),
        "torch": version("torch"),
        "backend": keras_backend,
        "load_average": list(os.getloadavg()),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def machine_slug(info: dict[str, Any]) -> str:
    """A file-name-safe name for the machine, e.g. ``amd-epyc-2c`` or ``nvidia-h100-...``."""
    device = info["accelerators"][0].split(",")[0] if info["accelerators"] else info["cpu"]
    slug = re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")[:40] or "machine"
    return f"{slug}-{info['cores']}c"
