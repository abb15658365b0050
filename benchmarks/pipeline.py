"""Throughput of zoo.data's input pipeline: decode + resize of a folder of JPEGs, images/s.

Compare the result with a model's training throughput (images/s): if the pipeline is not
several times faster, the model starves. Run as ``python -m benchmarks.pipeline``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def _photos() -> list[np.ndarray]:
    """Real photos from scikit-image when installed, else smooth synthetic images."""
    try:
        from skimage import data as skdata

        return [skdata.chelsea(), skdata.coffee(), skdata.astronaut(), skdata.rocket()]
    except ImportError:
        grid = np.linspace(0, 255, 512)
        return [
            np.stack(np.meshgrid(grid, grid[::-1]) + [np.full((512, 512), 128.0)], -1).astype(
                np.uint8
            )
        ]


def make_jpeg_folder(
    path: str | os.PathLike, n: int, size: tuple[int, int] = (500, 375), classes: int = 4
) -> Path:
    """Writes ``n`` JPEGs of ``size`` (width, height) into ``classes`` class sub-folders.

    Each file is a random crop of a real photo (scikit-image's samples), resized to
    ``size`` and saved at quality 90, so decoding costs what a real photo of that size does.

    Returns:
        The folder, usable as ``zoo.data.load("folder:" + str(path))``.
    """
    root = Path(path)
    rng = np.random.default_rng(0)
    photos = _photos()
    for i in range(n):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        image = Image.fromarray(photo[y : y + ch, x : x + cw]).convert("RGB").resize(size)
        target = root / f"class{i % classes}" / f"img{i:05d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target, "JPEG", quality=90)
    return root


def measure_decode_resize(
    folder: str | os.PathLike,
    image_size: tuple[int, int] = (224, 224),
    batch_size: int = 32,
    repeats: int = 3,
) -> dict[str, Any]:
    """Times one pass of ``zoo.data.pipeline`` (decode + RGB + resize + batch) over a folder.

    Args:
        folder: one sub-folder of images per class.
        image_size: ``(height, width)`` the images are resized to.
        batch_size: images per batch.
        repeats: timed passes (after one warm-up pass); the median is reported.

    Returns:
        JSON-able dict: ``images_per_s_median``, ``images_per_s`` (each pass), ``images``,
        ``validation_pass_s`` (the loader's decode-every-file check), settings, machine.
    """
    import tensorflow as tf

    from zoo import data

    start = time.perf_counter()
    source = data.load(f"folder:{folder}", validation_fraction=0.0)
    validation_s = time.perf_counter() - start
    n = source.num_examples("train")
    batches = data.pipeline(source.train, image_size, batch_size, training=False)
    for _ in batches:  # warm-up: tracing, thread pools, file cache
        pass
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        count = sum(int(x.shape[0]) for x, _ in batches)
        rates.append(count / (time.perf_counter() - start))
    return {
        "benchmark": "zoo.data pipeline decode+resize (Pillow decode, tf.image.resize)",
        "images": n,
        "skipped": len(source.skipped),
        "image_size": list(image_size),
        "batch_size": batch_size,
        "repeats": repeats,
        "images_per_s_median": statistics.median(rates),
        "images_per_s": rates,
        "validation_pass_s": validation_s,
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "pillow": Image.__version__,
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Makes a temporary folder of JPEGs (unless --folder) and prints the result as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", help="existing image folder (default: make one)")
    parser.add_argument("--n", type=int, default=256, help="JPEGs to make")
    parser.add_argument("--jpeg-size", type=int, nargs=2, default=(500, 375), metavar=("W", "H"))
    parser.add_argument("--image-size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or make_jpeg_folder(tmp, args.n, tuple(args.jpeg_size))
        result = measure_decode_resize(
            folder, tuple(args.image_size), args.batch_size, args.repeats
        )
    result["jpeg_size"] = None if args.folder else list(args.jpeg_size)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
