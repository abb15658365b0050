"""The machine's peak (a large matmul) and backbone forward throughput.

Both run on any Keras backend (TensorFlow, JAX) on synthetic numpy data. Forward passes
run inside the backend's compiled predict function (``model.predict_on_batch``): a
``tf.function`` on TensorFlow (with ``jit_compile`` for the XLA mode), ``jax.jit`` on
JAX. Each mode's first call (trace/compile plus one batch) is reported apart from the
timed repeats.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.common import compiled, median, time_calls, to_host

# float32_folded: float32 with every BatchNorm folded into the convolution before it, as
# zoo's inference-only passes run (the cache's prefix, a run's evaluation).
MODES = ("float32", "float32_folded", "float32_xla", "mixed_bfloat16")


def measure_peak(size: int = 4096, repeats: int = 5) -> dict[str, Any]:
    """GFLOP/s of a ``size x size`` matmul in float32 and in bfloat16.

    The matmul runs in the backend's default compiled function (``tf.function`` without
    XLA on TensorFlow, the oneDNN path; ``jax.jit`` on JAX) and returns only its sum, so
    no large copy is timed. ``2 * size**3`` floating-point operations per call.

    Returns:
        ``{"size", "backend", "devices", "float32": {...}, "bfloat16": {...}}`` where each
        dtype has ``gflops`` (median), ``gflops_runs``, ``first_call_seconds``.
    """
    import keras

    from benchmarks.common import backend

    flops = 2.0 * size**3
    rng = np.random.default_rng(0)
    a_host = rng.standard_normal((size, size), dtype=np.float32)
    b_host = rng.standard_normal((size, size), dtype=np.float32)
    result: dict[str, Any] = {"size": size, "backend": backend(), "devices": _devices()}
    for dtype in ("float32", "bfloat16"):
        a = keras.ops.convert_to_tensor(a_host, dtype=dtype)
        b = keras.ops.convert_to_tensor(b_host, dtype=dtype)

        def matmul_sum(x, y):
            return keras.ops.sum(keras.ops.cast(keras.ops.matmul(x, y), "float32"))

        fn = compiled(matmul_sum)
        timing = time_calls(lambda fn=fn, a=a, b=b: to_host(fn(a, b)), repeats)
        runs = [flops / s / 1e9 for s in timing["seconds"]]
        result[dtype] = {
            "gflops": median(runs),
            "gflops_runs": runs,
            "first_call_seconds": timing["first_call_seconds"],
        }
    return result


def _devices() -> list[str]:
    from benchmarks.common import backend

    name = backend()
    if name == "jax":
        import jax

        return [str(d) for d in jax.devices()]
    if name == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_logical_devices()]
    return []


def measure_forward(
    backbone: str,
    batch_size: int = 16,
    repeats: int = 5,
    input_size: int | None = None,
    modes: tuple[str, ...] = MODES,
    peak: dict[str, Any] | None = None,
    device_resident: bool = False,
) -> dict[str, Any]:
    """Images/s of one backbone's forward pass in each mode of :data:`MODES`.

    Args:
        backbone: registry name; built with ``weights=None`` (speed does not depend on
            the values).
        batch_size: images per call.
        repeats: timed calls per mode after the warm-up call.
        input_size: square input side in pixels; default the spec's input size.
        modes: a subset of :data:`MODES`. On JAX, ``float32`` is skipped (JAX always
            compiles with XLA: ``float32_xla`` is its plain mode).
        peak: the ``measure_peak`` result, to report the fraction of peak reached.
        device_resident: on JAX, time the model's jitted inference call
            (``stateless_call``, ``training=False``) on input already on the device, up to
            ``block_until_ready``: the forward math, as timm's forward on a GPU is timed,
            without ``predict_on_batch``'s host copies (on a GPU they cost about as much
            as a small backbone's forward). Elsewhere ignored.

    Returns:
        ``{"input_size", "batch_size", "gmacs", "<mode>": {"images_per_second", "gflops",
        "fraction_of_peak", "first_call_seconds", "images_per_second_runs"}}``; GFLOP/s
        is ``2 * GMACs * images/s`` with GMACs counted on the built model at this input
        size (``zoo.cost.count_macs``, else the spec's figure scaled by area).
    """
    import zoo
    from benchmarks.common import backend

    spec = zoo.get_spec(backbone)
    size = tuple(spec.input_size) if input_size is None else (input_size, input_size)
    images = np.random.default_rng(0).uniform(0, 255, (batch_size, *size, 3))
    images = images.astype("float32")
    result: dict[str, Any] = {"input_size": list(size), "batch_size": batch_size, "gmacs": None}
    for mode in modes:
        if mode == "float32" and backend() == "jax":
            result[mode] = {"skipped": "JAX always compiles with XLA; see float32_xla"}
            continue
        result[mode], counted = _forward_mode(backbone, mode, images, repeats, device_resident)
        if result["gmacs"] is None:
            area = (size[0] * size[1]) / (spec.input_size[0] * spec.input_size[1])
            result["gmacs"] = counted if counted is not None else spec.gmacs * area
        _add_gflops(result[mode], result["gmacs"], mode, peak)
    return result


def _forward_mode(
    backbone: str, mode: str, images: np.ndarray, repeats: int, device_resident: bool = False
) -> tuple[dict[str, Any], float | None]:
    import keras

    import zoo

    keras.backend.clear_session()
    keras.config.set_dtype_policy("mixed_bfloat16" if mode == "mixed_bfloat16" else "float32")
    try:
        model = zoo.create_backbone(backbone, weights=None, input_shape=images.shape[1:])
        if mode == "float32_folded":
            from zoo.caching.fold import fold_batchnorm

            model = fold_batchnorm(model)[0]
        model.compile(jit_compile=mode == "float32_xla" or _always_jit())
        resident = device_resident and _always_jit()
        call = _jax_forward(model, images) if resident else lambda: model.predict_on_batch(images)
        timing = time_calls(call, repeats)
        gmacs = _count_gmacs(model)
    finally:
        keras.config.set_dtype_policy("float32")
    runs = [len(images) / s for s in timing["seconds"]]
    out = {
        "images_per_second": median(runs),
        "images_per_second_runs": runs,
        "first_call_seconds": timing["first_call_seconds"],
        "timed": "jax.jit(stateless_call) on device input" if resident else "predict_on_batch",
    }
    return out, gmacs


def _jax_forward(model: Any, images: np.ndarray) -> Any:
    """A call running ``model``'s inference pass under ``jax.jit`` on device-resident input.

    The same computation as Keras' predict step (``stateless_call`` with the model's
    variables, ``training=False``), without its host-to-device and device-to-host copies.
    """
    import jax

    def forward(trainable: Any, non_trainable: Any, x: Any) -> Any:
        return model.stateless_call(trainable, non_trainable, x, training=False)[0]

    fn = jax.jit(forward)
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    x = jax.device_put(images)
    return lambda: jax.block_until_ready(fn(trainable, non_trainable, x))


def _always_jit() -> bool:
    from benchmarks.common import backend

    return backend() == "jax"


def _count_gmacs(model: Any) -> float | None:
    try:
        from zoo.cost import count_macs
    except ImportError:
        return None
    try:
        return count_macs(model) / 1e9
    except (ValueError, TypeError, AttributeError):
        return None


def peak_gflops(peak: dict[str, Any] | None, mode: str) -> float | None:
    """The matmul peak (GFLOP/s) that a forward in ``mode`` is measured against, or None."""
    key = "bfloat16" if mode == "mixed_bfloat16" else "float32"
    return ((peak or {}).get(key) or {}).get("gflops")


def _add_gflops(entry: dict[str, Any], gmacs: float, mode: str, peak: dict | None) -> None:
    entry["gflops"] = 2.0 * gmacs * entry["images_per_second"]
    limit = peak_gflops(peak, mode)
    entry["fraction_of_peak"] = entry["gflops"] / limit if limit else None
