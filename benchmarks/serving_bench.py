"""Serving throughput per deploy format, beside timm.

One process per backbone (``python -m benchmarks.measure serving_formats``). It builds
``zoo.build_classifier(backbone, num_classes, weights=None)`` (random weights: speed does
not depend on their values), exports it with ``recipes.export.export_saved_model`` and
converts it with ``recipes.deploy.convert`` to every deploy format; ``tflite-int8`` is
calibrated on random pixels, which is enough for speed and says nothing about accuracy.
Each file runs with the runtime zoo's own ``recipes.deploy.load_runner`` gives a user:

    saved_model   tf.saved_model.load(dir).signatures["serving_default"]
    tflite        LiteRT interpreter (XNNPACK), threads = the cores this process may use
    tflite-fp16   the same
    tflite-int8   the same, uint8 input, uint8 probabilities dequantized
    onnx          onnxruntime, CPU execution provider, its default threads
    timm          timm eager CPU inference (:mod:`benchmarks.timm_bench`), when installed

Every runner gets the same float32 pixels 0..255 ``(batch, height, width, 3)``. The
SavedModel signature returns logits, probabilities and class names; a ``.tflite``
returns probabilities, an ``.onnx`` logits and probabilities, timm logits. timm's model has no input scaling inside (its users scale in the data
loader); zoo's formats scale inside the model.

For each batch size, each runner is warmed up once, then timed ``repeats`` times; a
timed call runs ``images_per_call // batch`` batches (at least one). Images/s is the
median over the repeats.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import SKIP_NEEDS_TF, cores, has_tensorflow, skipped, time_calls
from benchmarks.timm_bench import SKIP_NEEDS_PEER, TIMM_NAMES, has_timm, timm_runner, versions

SERVING_BACKBONES = ("efficientnet_lite0", "mobilenet_v2")
ZOO_FORMATS = ("saved_model", "tflite", "tflite-fp16", "tflite-int8", "onnx")
# Targets: the fastest zoo format at least 1.5x the SavedModel and at least timm.
TARGET_VS_SAVED_MODEL = 1.5
TARGET_VS_TIMM = 1.0

Runner = Callable[[np.ndarray], np.ndarray]


def measure_serving_formats(
    backbone: str,
    batch_sizes: Sequence[int] = (1, 32),
    input_size: int | None = None,
    repeats: int = 5,
    images_per_call: int = 32,
    num_classes: int = 10,
    calibration_images: int = 32,
    formats: Sequence[str] = ZOO_FORMATS,
) -> dict[str, Any]:
    """Images/s of each zoo serving format and of timm, at each batch size.

    Args:
        backbone: a registered zoo backbone; timm runs when it is in
            ``benchmarks.timm_bench.TIMM_NAMES`` and timm is installed.
        batch_sizes: batch sizes measured, each reported apart.
        input_size: square input side in pixels; default the backbone's own.
        repeats: timed calls per runner and batch size (after one warm-up call).
        images_per_call: images per timed call (rounded down to whole batches).
        num_classes: classes of the classifier's head (and of timm's).
        calibration_images: random-pixel images calibrating ``tflite-int8``.
        formats: the zoo formats measured, ``saved_model`` and keys of
            ``recipes.deploy.FORMATS``.

    Returns:
        ``backbone``, ``input_size``, ``threads``, ``setup_seconds`` (export or conversion
        per format), ``logit_scale`` (max |Keras logit| on a batch of ``max(batch_sizes)``)
        and ``output_diff`` (each format's largest difference to the Keras model over the
        outputs it returns: logits over that scale, probabilities as they are; that each
        runner runs the same model; int8 on random weights and pixels is no accuracy
        check),
        ``timm`` (``"ok"`` or why not), ``versions``, and per batch size
        ``batch_<n>`` = :func:`summarize` of the images/s. Without TensorFlow:
        ``{"skipped": ...}``.
    """
    if not has_tensorflow():
        return skipped(SKIP_NEEDS_TF)
    from benchmarks.tf_bench import _classifier_and_images
    from recipes.deploy import expected_outputs

    model, x = _classifier_and_images(backbone, max(batch_sizes), input_size, num_classes)
    reference = np.asarray(model.predict(x, verbose=0), np.float32)
    timm_status = _timm_status(backbone)
    with tempfile.TemporaryDirectory() as tmp:
        runners, setup = _zoo_runners(model, Path(tmp), formats, calibration_images, x)
        if timm_status == "ok":
            runners["timm"] = timm_runner(backbone, num_classes)
        # Random weights give tiny logits, so their difference is relative to their scale.
        scale = max(float(np.max(np.abs(reference))), float(np.finfo(np.float32).tiny))
        expected = expected_outputs(reference, multi_label=False)
        diffs = {
            name: _output_diff(run(x), expected, scale)
            for name, run in runners.items()
            if name != "timm"
        }
        per_batch = {
            f"batch_{batch}": summarize(
                _rates(runners, x[:batch], repeats, images_per_call),
                None if timm_status == "ok" else timm_status,
            )
            for batch in batch_sizes
        }
    return {
        "backbone": backbone,
        "input_size": list(x.shape[1:3]),
        "threads": cores(),
        "weights": "random (weights=None): speed only",
        "int8_calibration": f"{calibration_images} random-pixel images: speed only",
        "timm": timm_status,
        "timm_model": TIMM_NAMES.get(backbone),
        "versions": versions(),
        "setup_seconds": setup,
        "logit_scale": scale,
        "output_diff": diffs,
        **per_batch,
    }


def _timm_status(backbone: str) -> str:
    if not has_timm():
        return SKIP_NEEDS_PEER
    if backbone not in TIMM_NAMES:
        return f"skipped: no timm counterpart of {backbone} listed in benchmarks.timm_bench"
    return "ok"


def _zoo_runners(
    model: Any, directory: Path, formats: Sequence[str], calibration_images: int, x: np.ndarray
) -> tuple[dict[str, Runner], dict[str, float]]:
    """Exports / converts each format into ``directory``; returns runners and seconds."""
    from recipes import deploy

    calibration = (
        np.random.default_rng(1)
        .uniform(0, 255, (calibration_images, *x.shape[1:]))
        .astype("float32")
    )
    runners: dict[str, Runner] = {}
    seconds: dict[str, float] = {}
    for name in formats:
        start = time.perf_counter()
        if name == "saved_model":
            runners[name] = _saved_model_runner(model, directory / "export")
        else:
            path = directory / deploy.FORMATS[name].file
            path.write_bytes(deploy.convert(model, name, calibration=calibration))
            runners[name] = deploy.load_runner(path)
        seconds[name] = time.perf_counter() - start
    return runners, seconds


def _output_diff(out: Any, expected: dict[str, np.ndarray], scale: float) -> float:
    """Largest difference of a runner's outputs (an array of logits, or ``{name: array}``
    as deployed files return) to the expected ones; logits relative to ``scale``."""
    outputs = out if isinstance(out, dict) else {"logits": out}
    return max(
        float(np.max(np.abs(value - expected[name]))) / (scale if name == "logits" else 1.0)
        for name, value in outputs.items()
        if name in expected
    )


def _saved_model_runner(model: Any, export_dir: Path) -> Runner:
    import tensorflow as tf

    from recipes.export import export_saved_model

    export_saved_model(model, export_dir)
    serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    input_name = next(iter(serve.structured_input_signature[1]))

    def run(images: np.ndarray) -> np.ndarray:
        return serve(**{input_name: tf.constant(images)})["logits"].numpy()

    return run


def _rates(
    runners: dict[str, Runner], batch: np.ndarray, repeats: int, images_per_call: int
) -> dict[str, float]:
    """Median images/s of each runner on ``batch``, timed one runner after the other."""
    calls = max(images_per_call // len(batch), 1)

    def timed(run: Runner) -> Callable[[], None]:
        def call() -> None:
            for _ in range(calls):
                run(batch)

        return call

    return {
        name: calls * len(batch) / time_calls(timed(run), repeats)["median_seconds"]
        for name, run in runners.items()
    }


def summarize(rates: dict[str, float], timm_skipped: str | None = None) -> dict[str, Any]:
    """Ratios, the fastest zoo format and the targets from images/s per runner.

    Args:
        rates: images/s per runner: zoo formats and, when it ran, ``"timm"``.
        timm_skipped: why timm did not run (it then has this string, not a number).

    Returns:
        ``images_per_second`` (per runner, timm's number or skip reason),
        ``ratio_to_saved_model`` and ``ratio_to_timm`` (per zoo format; None where the
        reference is missing), ``fastest`` (the fastest zoo format) and its
        ``fastest_images_per_second``, and ``targets``: ``{"fastest_vs_saved_model" |
        "fastest_vs_timm": {"value", "target", "met"}}`` (``met`` None when not measured).
    """
    zoo_rates = {k: v for k, v in rates.items() if k != "timm"}
    saved, timm = rates.get("saved_model"), rates.get("timm")
    fastest = max(zoo_rates, key=zoo_rates.get)
    best = zoo_rates[fastest]

    def target(value: float | None, goal: float) -> dict[str, Any]:
        met = None if value is None else value >= goal
        return {"value": value, "target": f">= {goal:g}", "met": met}

    return {
        "images_per_second": {**zoo_rates, "timm": timm if timm is not None else timm_skipped},
        "ratio_to_saved_model": {k: v / saved if saved else None for k, v in zoo_rates.items()},
        "ratio_to_timm": {k: v / timm if timm else None for k, v in zoo_rates.items()},
        "fastest": fastest,
        "fastest_images_per_second": best,
        "targets": {
            "fastest_vs_saved_model": target(
                best / saved if saved else None, TARGET_VS_SAVED_MODEL
            ),
            "fastest_vs_timm": target(best / timm if timm else None, TARGET_VS_TIMM),
        },
    }
