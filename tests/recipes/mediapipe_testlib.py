"""One tiny trained export with every LiteRT format, shared by the MediaPipe and web-page
tests (not collected by pytest).

:func:`colour_export` trains the tiny test backbone's classifier for a few epochs on noisy
red / green / blue squares (so its top-1 is decisive and int8 agrees with float), exports
it, deploys ``tflite``, ``tflite-fp16`` and ``tflite-int8`` into it and writes probe PNGs.
It is built once per test session, also across pytest-xdist workers (a file lock in the
session's shared temporary directory), because the build takes about half a minute.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tests.recipes import export_testlib as tl

CLASS_NAMES = ["red", "green", "blue"]
COLOURS = np.array([(210, 40, 40), (40, 180, 50), (40, 50, 210)], np.float32)
FORMATS = ["tflite", "tflite-fp16", "tflite-int8"]
PROBES = 12  # probe PNGs, four per class


@dataclass(frozen=True)
class ColourExport:
    """The shared export: its directory and the probe PNG files (class = index % 3)."""

    export_dir: Path
    probes: tuple[Path, ...]


def colour_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy colour squares with a darker random rectangle: float32 0..255
    ``(n, 32, 32, 3)`` and their labels (``i % 3``)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    images = COLOURS[labels][:, None, None, :] + rng.normal(0, 25, (n, *tl.INPUT_SIZE, 3))
    for image in images:
        y, x = rng.integers(0, 24, 2)
        image[y : y + 8, x : x + 8] *= rng.uniform(0.4, 0.9)
    return np.clip(np.round(images), 0, 255).astype(np.float32), labels


def _build(root: Path) -> ColourExport:
    import keras

    from recipes import deploy
    from recipes.export import export_saved_model
    from zoo.classifier import build_classifier

    tl.ensure_registered()
    keras.utils.set_random_seed(0)
    model = build_classifier(
        tl.BACKBONE, 3, weights=None, input_shape=(*tl.INPUT_SIZE, 3), class_names=CLASS_NAMES
    )
    images, labels = colour_images(150, seed=0)
    model.compile(
        keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(images, labels, batch_size=30, epochs=6, verbose=0)
    export_dir = root / "export"
    export_saved_model(model, export_dir)
    deploy.deploy(
        export_dir, FORMATS, model, calibration=images, evaluation=colour_images(60, seed=1)
    )
    probe_images, _ = colour_images(PROBES, seed=2)
    probes = []
    for i, image in enumerate(probe_images):
        path = root / "probes" / f"{i}_{CLASS_NAMES[i % 3]}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(image.astype(np.uint8)).save(path)
        probes.append(path)
    (root / "done").write_text("ok")
    return ColourExport(export_dir, tuple(probes))


def colour_export(tmp_path_factory) -> ColourExport:
    """The shared export, built on first use in this test session (see the module doc)."""
    from filelock import FileLock

    worker = os.environ.get("PYTEST_XDIST_WORKER")
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if worker else base) / "zoo-colour-export"
    root.mkdir(exist_ok=True)
    with FileLock(str(root) + ".lock"):
        if (root / "done").is_file():
            probes = sorted(
                (root / "probes").glob("*.png"), key=lambda p: int(p.name.split("_")[0])
            )
            return ColourExport(root / "export", tuple(probes))
        return _build(root)
