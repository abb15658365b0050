"""TensorFlow-only measurements: SavedModel serving and the JPEG input pipeline.

Both need TensorFlow (SavedModel, tf.data) and run with ``KERAS_BACKEND=tensorflow``;
where TensorFlow is absent they return ``{"skipped": "skipped: needs TensorFlow"}``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import SKIP_NEEDS_TF, has_tensorflow, skipped, time_calls


def measure_serving(
    backbone: str,
    images: int = 128,
    batch_size: int = 32,
    repeats: int = 5,
    input_size: int | None = None,
    num_classes: int = 10,
) -> dict[str, Any]:
    """The exported SavedModel's serving throughput against the Keras model's ``predict``.

    Builds ``zoo.build_classifier(backbone, num_classes, weights=None)``, exports it with
    ``recipes.export.export_saved_model`` and checks it with
    ``recipes.verify.verify_export`` (both timed; the export verifies itself too, so
    ``export_seconds`` includes one verification), then runs the same batches through
    ``tf.saved_model.load(dir).signatures["serving_default"]`` and through
    ``model.predict``. Each side is warmed up once; medians of ``repeats`` passes.

    Returns:
        ``keras_images_per_second``, ``serving_images_per_second``, ``ratio`` (serving /
        Keras), ``export_seconds``, ``verify_seconds``, ``export_verify_seconds``,
        ``verify_passed``, ``max_abs_logit_diff``.
    """
    fields = ("keras_images_per_second", "serving_images_per_second", "ratio")
    if not has_tensorflow():
        return skipped(SKIP_NEEDS_TF, **dict.fromkeys(fields))
    try:
        from recipes.export import export_saved_model
        from recipes.verify import verify_export
    except ImportError as exc:
        return skipped(f"skipped: recipes.export / recipes.verify missing ({exc})")
    import tensorflow as tf

    model, x = _classifier_and_images(backbone, images, input_size, num_classes)
    with tempfile.TemporaryDirectory() as tmp:
        export_dir = Path(tmp) / "export"
        start = time.perf_counter()
        export_saved_model(model, export_dir)
        exported = time.perf_counter()
        verdict = verify_export(export_dir, model=model)
        verified = time.perf_counter()
        serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
        input_name = next(iter(serve.structured_input_signature[1]))

        def run_serving() -> list[np.ndarray]:
            outs = []
            for i in range(0, len(x), batch_size):
                out = serve(**{input_name: tf.constant(x[i : i + batch_size])})
                outs.append(
                    (out["logits"] if "logits" in out else next(iter(out.values()))).numpy()
                )
            return outs

        served = time_calls(run_serving, repeats)
        predicted = time_calls(lambda: model.predict(x, batch_size=batch_size, verbose=0), repeats)
        diff = float(np.max(np.abs(np.concatenate(run_serving()) - model.predict(x, verbose=0))))
    keras_rate, serving_rate = (
        len(x) / predicted["median_seconds"],
        len(x) / served["median_seconds"],
    )
    return {
        "backbone": backbone,
        "images": len(x),
        "batch_size": batch_size,
        "keras_images_per_second": keras_rate,
        "serving_images_per_second": serving_rate,
        "ratio": serving_rate / keras_rate,
        "keras_first_call_seconds": predicted["first_call_seconds"],
        "serving_first_call_seconds": served["first_call_seconds"],
        "export_seconds": exported - start,
        "verify_seconds": verified - exported,
        "export_verify_seconds": verified - start,
        "verify_passed": bool(getattr(verdict, "passed", False)),
        "verify_failures": list(getattr(verdict, "failures", [])),
        "max_abs_logit_diff": diff,
    }


def _classifier_and_images(
    backbone: str, images: int, input_size: int | None, num_classes: int
) -> tuple[Any, np.ndarray]:
    import keras

    import zoo
    from zoo.classifier import build_classifier

    keras.utils.set_random_seed(0)
    spec = zoo.get_spec(backbone)
    size = tuple(spec.input_size) if input_size is None else (input_size, input_size)
    model = build_classifier(backbone, num_classes, weights=None, input_shape=(*size, 3))
    x = np.random.default_rng(0).uniform(0, 255, (images, *size, 3)).astype("float32")
    return model, x


def measure_pipeline(
    image_size: list[int],
    images: int = 256,
    jpeg_size: list[int] = (500, 375),
    repeats: int = 3,
) -> dict[str, Any]:
    """JPEG decode + resize images/s from a folder (``benchmarks.pipeline``).

    Writes ``images`` JPEGs of ``jpeg_size`` (width, height) into a temporary folder with
    ``benchmarks.pipeline.make_jpeg_folder`` and reads them back through
    ``zoo.data.pipeline``, resized to ``image_size``, with
    ``benchmarks.pipeline.measure_decode_resize`` (one warm-up pass, then ``repeats``). The orchestrator
    divides by the fine-tune stage's training images/s (``pipeline.ratio``).

    Returns:
        ``images_per_second`` (median), ``images_per_second_runs``, ``image_size``,
        ``images``, and the rest of what ``measure_decode_resize`` reported (``details``).
    """
    if not has_tensorflow():
        return skipped(SKIP_NEEDS_TF, images_per_second=None)
    try:
        from benchmarks.pipeline import make_jpeg_folder, measure_decode_resize
    except ImportError as exc:
        return skipped(f"skipped: benchmarks.pipeline missing ({exc})", images_per_second=None)
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_jpeg_folder(Path(tmp) / "jpegs", images, tuple(jpeg_size))
        details = measure_decode_resize(folder, tuple(image_size), repeats=max(repeats, 1))
    return {
        "images": images,
        "jpeg_size": list(jpeg_size),
        "image_size": list(image_size),
        "images_per_second": float(details["images_per_s_median"]),
        "images_per_second_runs": list(details["images_per_s"]),
        "details": {k: v for k, v in details.items() if k != "machine"},
    }
