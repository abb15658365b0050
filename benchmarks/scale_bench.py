"""How the main job's cost grows with the data: its stages on synthetic image folders.

:func:`measure_scale` runs the built-in main job recipe (``fashion-mnist-lite0``) the way a
user runs it, ``recipes.runner.run_recipe``, with its data source swapped for a folder of
small PNGs (``folder:PATH``, one sub-folder per class, scanned and split by ``zoo.data``):
the same backbone, input size, batch, stages, cache and ``"auto"`` settings; export off
(its cost does not grow with the data); the stages' epochs as given (default 1 each, so a
1M-image point takes minutes, not hours). Everything scales with the images but the
model build (reported apart) and the settings probe (a few batches).

:func:`synthetic_folder` writes the images once, 32x32 greyscale PNGs in 10 class folders
(a class-dependent stripe pattern plus noise), under ``~/.cache/zoo-bench/scale/<images>``
(``ZOO_BENCH_CACHE`` moves it), and reuses them in later runs.

Per size it reports the folder scan and split seconds, the cache's bytes and where it
lived (memory or a memmap on disk), peak RSS (and where in the run it was reached), the
cache build's and training's images/s, and seconds per image end to end.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

RECIPE = "fashion-mnist-lite0"
NUM_CLASSES = 10
PIXELS = 32
SIZES = (10_000, 100_000)
LARGE_SIZE = 1_000_000
COMPLETE = ".complete"


def cache_root() -> Path:
    """Where the synthetic folders live: ``$ZOO_BENCH_CACHE/scale`` or
    ``~/.cache/zoo-bench/scale``."""
    base = os.environ.get("ZOO_BENCH_CACHE") or Path.home() / ".cache" / "zoo-bench"
    return Path(base) / "scale"


def synthetic_folder(images: int, root: Path | None = None, pixels: int = PIXELS) -> Path:
    """A folder of ``images`` greyscale PNGs in :data:`NUM_CLASSES` class folders.

    Written once (to a temporary sibling, renamed into place when complete) and reused:
    a folder holding the :data:`COMPLETE` marker is returned as it is.

    Args:
        images: how many images, spread evenly over the classes (``class_0`` ...).
        root: the parent folder (default :func:`cache_root`).
        pixels: the images' side in pixels.

    Returns:
        ``root / str(images)``.
    """
    from PIL import Image

    root = cache_root() if root is None else Path(root)
    folder = root / str(images)
    if (folder / COMPLETE).exists():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{images}-", dir=root))
    rng = np.random.default_rng(images)
    columns = np.arange(pixels, dtype=np.float32)
    for c in range(NUM_CLASSES):
        (staging / f"class_{c}").mkdir()
    for i in range(images):
        c = i % NUM_CLASSES
        stripes = 127.5 + 80.0 * np.sin(columns * (c + 1) * np.pi / pixels)
        noise = rng.normal(0.0, 30.0, (pixels, pixels))
        pixels_u8 = np.clip(stripes[None, :] + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels_u8, mode="L").save(staging / f"class_{c}" / f"{i:07d}.png")
    (staging / COMPLETE).write_text(f"{images} images, {pixels}x{pixels} greyscale PNG\n")
    if folder.exists():  # an incomplete earlier attempt
        shutil.rmtree(folder)
    staging.rename(folder)
    return folder


class _RssSampler:
    """Samples this process's resident set size every ``interval`` seconds, and notes
    which step of the run (the runner's latest log line) each sample belongs to.

    ``peak`` is the whole RSS per step; ``peak_anon`` its anonymous part (heap, arrays,
    tensors), without file-backed pages such as a memmapped cache's, which the kernel
    reclaims under pressure."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.step = "start"
        self.peak: dict[str, int] = {}
        self.peak_anon: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def mark(self, message: str) -> None:
        """The runner's ``echo``: a new log line starts a new step."""
        self.sample()
        self.step = _step_name(message)

    def sample(self) -> None:
        rss = rss_parts()
        for peaks, value in ((self.peak, rss["total"]), (self.peak_anon, rss["anon"])):
            if value > peaks.get(self.step, 0):
                peaks[self.step] = value

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()


def _step_name(message: str) -> str:
    """A log line's first words, without numbers or paths (``"fine-tuning"``)."""
    words = re.split(r"[:;(]", message, maxsplit=1)[0].split()[:3]
    return " ".join(w for w in words if not re.search(r"[\d/]", w)) or "run"


def rss_parts() -> dict[str, int]:
    """This process's resident set size now, in bytes: ``total``, ``anon`` (anonymous
    memory) and ``file`` (file-backed pages, a memmap's included), from
    ``/proc/self/status``."""
    fields = {"VmRSS": "total", "RssAnon": "anon", "RssFile": "file"}
    out = dict.fromkeys(fields.values(), 0)
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in fields:
                out[fields[key]] = int(line.split()[1]) * 1024
    return out


def current_rss_bytes() -> int:
    """This process's resident set size now, in bytes."""
    return rss_parts()["total"]


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far, in bytes (``getrusage``)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def scale_recipe(folder: Path, dest: Path, recipe: str = RECIPE) -> Path:
    """The main job recipe with its training-set subset line removed, written to ``dest``
    (the folder source and the rest are set by overrides in :func:`measure_scale`)."""
    from recipes.config import resolve_recipe_path

    text = resolve_recipe_path(recipe).read_text(encoding="utf-8")
    text = re.sub(r"(?m)^train_size\s*=.*\n", "", text)
    dest.write_text(text, encoding="utf-8")
    return dest


def measure_scale(
    images: int,
    epochs: list[int] | tuple[int, ...] = (1, 1),
    recipe: str = RECIPE,
    root: str | None = None,
) -> dict[str, Any]:
    """The main job's stages on a synthetic folder of ``images`` PNGs: cost per image.

    Args:
        images: folder size (10,000, 100,000, 1,000,000 in ``benchmarks.run --only scale``).
        epochs: each stage's epochs (the recipe's stages, in order).
        recipe: the built-in recipe whose data source is swapped for the folder.
        root: where the synthetic folders live (default :func:`cache_root`).

    Returns:
        ``images``, ``train_images`` / ``validation_images`` / ``test_images`` (the
        splits), ``generate_seconds`` (0 when the folder was reused), ``scan_split_seconds``
        (the runner's data step: folder scan, labels, split), ``cache`` (bytes over every
        cut, where, build seconds, images/s over train + validation; each stage's row has
        its own cut), per stage ``images_per_second``, ``seconds`` and ``cache``,
        ``timings`` (the runner's steps), ``wall_seconds``, ``seconds_per_image`` (wall /
        images), ``variable_seconds_per_image`` (without the model build),
        ``step_seconds_per_image`` (each runner step's seconds / images), ``rss`` (bytes:
        at the start, peak, peak of its anonymous part, both per step; a memmapped cache's
        pages count in the peak, not in the anonymous part), ``cache_budget_bytes``,
        ``settings`` (the precision ``"auto"`` chose) and ``test_top1`` (the
        synthetic classes are easy: a check that training ran, not an accuracy figure).
    """
    from recipes.runner import run_recipe
    from zoo.caching.store import DEFAULT_CACHE_BUDGET_BYTES

    start = time.perf_counter()
    folder = synthetic_folder(images, None if root is None else Path(root))
    generate_seconds = time.perf_counter() - start
    overrides = [
        f'data.source="folder:{folder}"',
        "export.enabled=false",
        'export.formats=["saved_model"]',
        *(f"stages.{i}.epochs={n}" for i, n in enumerate(epochs)),
    ]
    with tempfile.TemporaryDirectory(prefix="zoo-scale-", dir=folder.parent) as tmp:
        path = scale_recipe(folder, Path(tmp) / f"{recipe}-scale.toml", recipe)
        rss_start = current_rss_bytes()
        with _RssSampler() as sampler:
            result = run_recipe(path, out=Path(tmp) / "run", overrides=overrides, echo=sampler.mark)
        report = result.report
    data = report.data
    counted = [data.train_images, data.validation_images, data.test_images]
    fixed = report.timings.get("build model", 0.0)
    total = sum(c or 0 for c in counted)
    caches = {s.cache.cut: _cache_row(s.cache) for s in report.stages if s.cache.used}
    build = sum(s.cache.build_seconds for s in report.stages if s.cache.used)
    seen = (data.train_images or 0) + (data.validation_images or 0)
    return {
        "images": images,
        "folder": str(folder),
        "train_images": data.train_images,
        "validation_images": data.validation_images,
        "test_images": data.test_images,
        "skipped_files": len(data.skipped),
        "epochs": list(epochs),
        "input_size": report.input_shape[:2],
        "generate_seconds": generate_seconds if generate_seconds > 1.0 else 0.0,
        "scan_split_seconds": report.timings.get("load data"),
        "cache": {
            "bytes": sum(c["bytes"] or 0 for c in caches.values()),
            "where": sorted({c["where"] for c in caches.values()}),
            "build_seconds": build,
            "images_per_second": seen / build if build else None,
        },
        "cache_budget_bytes": DEFAULT_CACHE_BUDGET_BYTES,
        "stages": {
            s.name: {
                "images_per_second": s.images_per_second,
                "seconds": s.seconds,
                "epochs": s.epochs_run,
                "cache": _cache_row(s.cache),
            }
            for s in report.stages
        },
        "settings": {"mixed_precision": report.settings.mixed_precision},
        "timings": report.timings,
        "wall_seconds": report.wall_seconds,
        "fixed_seconds": fixed,
        "seconds_per_image": report.wall_seconds / total,
        "variable_seconds_per_image": (report.wall_seconds - fixed) / total,
        "step_seconds_per_image": {k: v / total for k, v in report.timings.items()},
        "rss": {
            "start_bytes": rss_start,
            "peak_bytes": peak_rss_bytes(),
            "peak_anon_bytes": max(sampler.peak_anon.values(), default=None),
            "peak_by_step_bytes": sampler.peak,
            "peak_anon_by_step_bytes": sampler.peak_anon,
        },
        "test_top1": report.score,
    }


def _cache_row(cache: Any) -> dict[str, Any]:
    """A stage's cache as the scale rows show it (``where``: memory or memmap)."""
    where = None if cache.where is None else "memory" if cache.where == "memory" else "memmap"
    return {
        "used": cache.used,
        "cut": cache.cut,
        "shape": cache.shape,
        "bytes": cache.bytes,
        "where": where,
        "where_reason": cache.where_reason,
        "build_seconds": cache.build_seconds,
        "reused": cache.reused,
        "derived_from": cache.derived_from,
    }


def scale_summary(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Whether the cost per image stays flat and peak RSS bounded across the sizes.

    Args:
        rows: :func:`measure_scale` results by size (errors and skips are left out).

    Returns:
        ``spread`` (largest / smallest ``variable_seconds_per_image``), ``flat`` (spread
        <= 1.2), ``rss_over_budget_bytes`` at the largest size (peak RSS minus the cache
        budget), ``rss_bounded`` (that is at most 1 GiB), the same for the anonymous part
        of RSS (``anon_over_budget_bytes``, ``anon_bounded``), ``largest``, and the line
        through the two largest sizes' wall seconds: ``marginal_seconds_per_image`` (its
        slope) and ``fixed_seconds`` (its intercept: the probe, tracing, compiling).
    """
    done = {int(k): r for k, r in rows.items() if r.get("variable_seconds_per_image")}
    if not done:
        return {"spread": None, "flat": None, "rss_over_budget_bytes": None, "rss_bounded": None}
    per_image = [r["variable_seconds_per_image"] for r in done.values()]
    spread = max(per_image) / min(per_image)
    largest = done[max(done)]
    over = largest["rss"]["peak_bytes"] - largest["cache_budget_bytes"]
    anon = largest["rss"].get("peak_anon_bytes")
    anon_over = None if anon is None else anon - largest["cache_budget_bytes"]
    sizes = sorted(done)
    marginal = fixed = None
    if len(sizes) > 1:  # wall = fixed + marginal x images through the two largest sizes
        a, b = done[sizes[-2]], done[sizes[-1]]
        total = {n: r["wall_seconds"] / r["seconds_per_image"] for n, r in ((0, a), (1, b))}
        marginal = (b["wall_seconds"] - a["wall_seconds"]) / (total[1] - total[0])
        fixed = a["wall_seconds"] - marginal * total[0]
    return {
        "marginal_seconds_per_image": marginal,
        "fixed_seconds": fixed,
        "spread": spread,
        "flat": spread <= 1.2,
        "largest": max(done),
        "rss_over_budget_bytes": over,
        "rss_bounded": over <= 2**30,
        "anon_over_budget_bytes": anon_over,
        "anon_bounded": None if anon_over is None else anon_over <= 2**30,
    }
