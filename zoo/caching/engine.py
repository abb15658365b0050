"""The engine of an inference-only pass: TensorFlow (BatchNorm folded or not) or LiteRT.

The cache builds (:mod:`zoo.caching.compute`), a run's evaluation and embedding passes run
frozen weights in inference mode, so any engine that computes the same function can run
them. Which one is fastest depends on the CPU and the network: on a 2-core AVX2 CPU LiteRT
with XNNPACK ran EfficientNet-Lite0 faster than TensorFlow, and folding BatchNorm into the
convolutions made EfficientNet-B0 slower there. With ``engine="auto"`` zoo measures
instead of guessing, the way ``mixed_precision="auto"`` does (:mod:`zoo.training.settings`):

1. the candidates: ``"tensorflow"`` (the model as built, the reference),
   ``"tensorflow-folded"`` (a copy with each BatchNorm folded into the convolution before
   it, :mod:`zoo.caching.fold`) and ``"litert"`` (the model converted in memory to a
   float32 ``.tflite``, no optimizations, run by ``ai_edge_litert``'s interpreter with
   XNNPACK and one thread per core this process may use). LiteRT is a candidate on the
   TensorFlow backend when ``ai_edge_litert`` imports (the ``deploy`` extra) and the model
   computes in float32; otherwise the choice records why it was left out;
2. the probe batch: the pass's first batch (real images, not synthetic ones: parity is
   checked on what the pass computes). Each candidate runs it ``WARMUP_CALLS`` times
   (tracing, allocation; the first call's output is the one checked) and then
   ``TIMED_CALLS`` timed times, the candidates taking turns call by call so that a burst of
   load elsewhere hits them alike; the median call counts (on a shared machine LiteRT's
   thread pool varies more than TensorFlow's: its best call overstates a whole pass);
3. parity: each candidate's output ``a`` on the probe batch against the reference's ``b``,
   as the relative error ``max|a - b| / max|b|`` (the largest difference over the largest
   magnitude of the reference); a candidate agrees when it is finite and at most
   ``PARITY_RTOL`` (1e-5, float32 rounding through tens of layers; folding gives about
   1e-6);
4. the fastest agreeing candidate wins, provided it is at least ``MIN_SPEEDUP`` times as
   fast as the reference: smaller gains are within the noise of a shared machine and
   would make the choice flip from run to run. A candidate that fails to build (the
   converter refuses an op) or disagrees is recorded with the reason and not used;
5. passes over fewer than ``PROBE_MIN_IMAGES`` images skip the probe (it would cost more
   than it could save) and run ``"tensorflow-folded"``; a pass under a ``tf.distribute``
   strategy runs ``"tensorflow"`` unprobed (a folded copy's variables would be mirrored).
   LiteRT is not converted for a pass that would take TensorFlow under
   ``LITERT_MIN_PASS_SECONDS`` (a middle pass over small cached activations).

``engine="tensorflow"`` probes the two TensorFlow candidates only (BatchNorm folded only
where that is faster); ``engine="litert"`` runs LiteRT after the same parity check, and
raises when it fails. The :class:`EngineChoice` records the engine, every candidate's time
and relative error, and why. Function-local TensorFlow imports; on other Keras backends
the TensorFlow candidates are ``predict_on_batch`` calls and LiteRT is no candidate.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import keras
import numpy as np

from zoo.caching.fold import fold_batchnorm
from zoo.errors import InvalidValueError

ENGINES = ("auto", "tensorflow", "litert")
REFERENCE = "tensorflow"
FOLDED = "tensorflow-folded"
LITERT = "litert"
# Float32 rounding through a few tens of layers in another summation order (XNNPACK's, a
# folded kernel's) stays around 1e-6 of the activations' scale; 1e-5 leaves room for that
# and still rejects a wrong kernel or a reduced-precision path.
PARITY_RTOL = 1e-5
# Repeated timings of the same engine on a shared 2-core machine differ by a few percent.
MIN_SPEEDUP = 1.05
WARMUP_CALLS = 1
TIMED_CALLS = 3
PROBE_MIN_IMAGES = 2048
LITERT_MIN_PASS_SECONDS = 10.0

Forward = Callable[[np.ndarray], np.ndarray]

log = logging.getLogger("zoo.caching")


@dataclass(frozen=True)
class EngineCandidate:
    """One engine the probe tried.

    Attributes:
        name: ``"tensorflow"``, ``"tensorflow-folded"`` or ``"litert"``.
        seconds_per_batch: median seconds of the timed calls on the probe batch; None when it
            could not run.
        relative_error: ``max|a - b| / max|b|`` of its output ``a`` against the
            reference's ``b`` on the probe batch; None when it could not run.
        agrees: finite and within ``PARITY_RTOL``.
        setup_seconds: seconds to make it (the fold, the conversion to ``.tflite``).
        error: why it could not run, or ``""``.
    """

    name: str
    seconds_per_batch: float | None
    relative_error: float | None
    agrees: bool
    setup_seconds: float = 0.0
    error: str = ""


@dataclass(frozen=True)
class EngineChoice:
    """What an inference-only pass ran on, and why (JSON-able via :meth:`to_dict`).

    Attributes:
        engine: the candidate used (``"tensorflow"``, ``"tensorflow-folded"``, ``"litert"``).
        asked: the engine asked for (``"auto"``, ``"tensorflow"``, ``"litert"``).
        probed: False when the probe was skipped (``reason`` says why).
        reason: how the choice was made.
        batch_size: images in the probe batch (0 when not probed).
        parity_rtol: the relative error a candidate may have against the reference.
        relative_error: the chosen engine's relative error on the probe batch (0.0 for
            the reference itself; None when not probed).
        probe_seconds: wall time of the whole probe, setup included.
        candidates: every candidate tried, in order; left_out: ``{name: why}`` for the
            candidates not tried.
    """

    engine: str
    asked: str
    probed: bool
    reason: str
    batch_size: int = 0
    parity_rtol: float = PARITY_RTOL
    relative_error: float | None = None
    probe_seconds: float = 0.0
    candidates: tuple[EngineCandidate, ...] = ()
    left_out: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the fields (``candidates`` as dicts, ``left_out`` a dict)."""
        d = asdict(self)
        d["candidates"] = [asdict(c) for c in self.candidates]
        d["left_out"] = dict(self.left_out)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EngineChoice:
        """The inverse of :meth:`to_dict`."""
        candidates = tuple(EngineCandidate(**c) for c in d.get("candidates", ()))
        left_out = tuple((d.get("left_out") or {}).items())
        return cls(**{**d, "candidates": candidates, "left_out": left_out})

    def text(self) -> str:
        """One line: the engine, and the probe's images/s per candidate when probed."""
        if not self.probed:
            return f"{self.engine} ({self.reason})"
        timed = [
            f"{c.name} {self.batch_size / c.seconds_per_batch:.0f} img/s"
            for c in self.candidates
            if c.seconds_per_batch
        ]
        error = f", relative error {self.relative_error:.1e}" if self.relative_error else ""
        return f"{self.engine} (probed: {', '.join(timed)}{error})"


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """``max|a - b| / max|b|``: the largest difference over the reference's largest value.

    Args:
        a: the candidate's output; b: the reference's, the same shape.

    Returns:
        The relative error (``inf`` when ``a`` is not finite; ``max|a - b|`` when ``b`` is
        all zeros).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"outputs of shapes {a.shape} and {b.shape} cannot be compared")
    if not np.all(np.isfinite(a)):
        return float("inf")
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    return diff / scale if scale > 0 else diff


def check_engine(engine: str) -> str:
    """``engine`` when it is one of :data:`ENGINES`.

    Raises:
        InvalidValueError: anything else.
    """
    if engine not in ENGINES:
        raise InvalidValueError(f"inference_engine must be one of {list(ENGINES)}; got {engine!r}.")
    return engine


def _tensorflow_backend() -> bool:
    return keras.backend.backend() == "tensorflow"


def _under_tf_strategy() -> bool:
    if not _tensorflow_backend():
        return False
    import tensorflow as tf

    return tf.distribute.has_strategy()


def keras_forward(model: keras.Model, jit_compile: bool = False) -> Forward:
    """``model`` in inference mode as a function of a numpy batch -> float32 numpy.

    On TensorFlow a ``tf.function`` (XLA-compiled with ``jit_compile``); elsewhere
    ``predict_on_batch``, which Keras compiles (jitted on JAX).
    """
    if not _tensorflow_backend():
        return lambda x: np.asarray(model.predict_on_batch(np.asarray(x)), np.float32)
    import tensorflow as tf

    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def forward(x: Any) -> Any:
        return tf.cast(model(x, training=False), tf.float32)

    return lambda x: np.asarray(forward(x))


def litert_available() -> str | None:
    """None when LiteRT can run here, else why not."""
    if not _tensorflow_backend():
        return (
            "the TFLite converter needs the TensorFlow backend (Keras runs on "
            f"{keras.backend.backend()})"
        )
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return "ai_edge_litert is not installed (pip install 'zoo[deploy]')"
    return None


class LiteRTForward:
    """``model`` converted in memory to a float32 ``.tflite`` and run by LiteRT.

    The conversion is TensorFlow's ``TFLiteConverter.from_concrete_functions`` on
    ``model(x, training=False)``, its variables frozen into constants, with no
    optimizations (float32 weights and arithmetic);
    the interpreter is ``ai_edge_litert``'s with its default XNNPACK delegate and
    ``threads`` threads (default: the cores this process may use,
    ``os.sched_getaffinity``). The batch dimension is resized to each call's batch (the
    last, partial batch of a pass included). One instance serves one thread at a time.

    Args:
        model: a single-input, single-output Keras model computing in float32.
        threads: interpreter threads; default the usable cores.

    Raises:
        ConverterError: TensorFlow's converter refused the model.
    """

    def __init__(self, model: keras.Model, threads: int | None = None) -> None:
        import tensorflow as tf
        from ai_edge_litert.interpreter import Interpreter
        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2,
        )

        shape = (None, *model.inputs[0].shape[1:])

        @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32)])
        def forward(x: Any) -> Any:
            return model(x, training=False)

        # Keras 3 variables reach a concrete function as resource handles the converter
        # would keep as variable ops; frozen into constants (what the converter does for
        # a SavedModel), the convolutions, folded BatchNorms and activations fuse.
        frozen = convert_variables_to_constants_v2(forward.get_concrete_function())
        converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
        converter.optimizations = []  # float32: no quantization, no float16 weights
        self.flatbuffer = bytes(converter.convert())
        self.threads = threads or len(os.sched_getaffinity(0))
        self._interpreter = Interpreter(model_content=self.flatbuffer, num_threads=self.threads)
        self._batch: int | None = None

    def __call__(self, x: Any) -> np.ndarray:
        it = self._interpreter
        images = np.ascontiguousarray(np.asarray(x, np.float32))
        (inp,) = it.get_input_details()
        if self._batch != len(images):
            it.resize_tensor_input(inp["index"], list(images.shape))
            it.allocate_tensors()
            self._batch = len(images)
            (inp,) = it.get_input_details()
        it.set_tensor(inp["index"], images)
        it.invoke()
        (out,) = it.get_output_details()
        return it.get_tensor(out["index"]).copy()


def _computes_in_float32(model: keras.Model) -> bool:
    return all(
        getattr(layer, "compute_dtype", "float32") in ("float32", None)
        for layer in model._flatten_layers(include_self=False)
    )


def _candidates(
    model: keras.Model, asked: str, jit_compile: bool
) -> tuple[dict[str, Callable[[], Forward]], dict[str, str]]:
    """The candidates to try (name -> builder), reference first, and those left out."""
    builders: dict[str, Callable[[], Forward]] = {
        REFERENCE: lambda: keras_forward(model, jit_compile)
    }
    left_out: dict[str, str] = {}
    folded, count = fold_batchnorm(model)
    if count:
        builders[FOLDED] = lambda: keras_forward(folded, jit_compile)
    else:
        left_out[FOLDED] = "fold_batchnorm finds no foldable convolution + BatchNorm pair here"
    if asked == "tensorflow":
        left_out[LITERT] = "inference_engine='tensorflow'"
        return builders, left_out
    why = litert_available()
    if why is None and not _computes_in_float32(model):
        why = "the model computes in a reduced precision (mixed precision); LiteRT runs float32"
    if why is None:
        builders[LITERT] = lambda: LiteRTForward(model)
    else:
        left_out[LITERT] = why
    return builders, left_out


def choose_engine(
    model: keras.Model,
    batch: Any,
    engine: str = "auto",
    *,
    jit_compile: bool = False,
    images: int | None = None,
    candidates: dict[str, Callable[[], Forward]] | None = None,
) -> tuple[Forward, EngineChoice]:
    """The forward function of ``model`` in inference mode on the engine to use, and why.

    See the module docstring for the candidates, the probe and the parity check.

    Args:
        model: a frozen Keras model (pixels or activations -> activations or logits).
        batch: the probe batch, ``(batch, ...)`` as the model takes it (the pass's first).
        engine: ``"auto"``, ``"tensorflow"`` or ``"litert"``.
        jit_compile: XLA-compile the TensorFlow candidates.
        images: images the pass will run (None: unknown); below ``PROBE_MIN_IMAGES`` the
            probe is skipped unless ``engine="litert"``.
        candidates: name -> builder of a forward function, to probe instead of the
            built-in ones (the first is the reference); a testing aid.

    Returns:
        ``(forward, choice)``: ``forward`` maps a numpy batch to float32 numpy outputs.

    Raises:
        InvalidValueError: an unknown ``engine``; ``engine="litert"`` where LiteRT cannot
            run, fails to convert the model, or disagrees with TensorFlow beyond
            ``PARITY_RTOL``.
    """
    check_engine(engine)
    if _under_tf_strategy():
        if engine == LITERT:
            raise InvalidValueError(
                "inference_engine='litert' cannot run under a tf.distribute strategy; use "
                "'auto' or 'tensorflow'."
            )
        reason = "under a tf.distribute strategy the model runs as built (a folded copy's "
        reason += "variables would be mirrored)"
        return keras_forward(model, jit_compile), EngineChoice(REFERENCE, engine, False, reason)
    if candidates is None:
        builders, left_out = _candidates(model, engine, jit_compile)
    else:
        builders, left_out = dict(candidates), {}
    if engine == LITERT and LITERT not in builders:
        raise InvalidValueError(
            f"inference_engine='litert' cannot run here: {left_out.get(LITERT)}; use 'auto' "
            "or 'tensorflow'."
        )
    if engine != LITERT and images is not None and images < PROBE_MIN_IMAGES:
        name = FOLDED if FOLDED in builders else next(iter(builders))
        reason = (
            f"{images} images, below the {PROBE_MIN_IMAGES} where the probe pays for itself: "
            f"{name}, not probed"
        )
        forward = builders[name]()
        return forward, EngineChoice(name, engine, False, reason, left_out=tuple(left_out.items()))
    return _probe(builders, left_out, np.asarray(batch), engine, images)


def _timed_call(forward: Forward, batch: np.ndarray) -> float:
    start = time.perf_counter()
    forward(batch)
    return time.perf_counter() - start


def _probe(
    builders: dict[str, Callable[[], Forward]],
    left_out: dict[str, str],
    batch: np.ndarray,
    asked: str,
    images: int | None = None,
) -> tuple[Forward, EngineChoice]:
    """Times each candidate on ``batch`` and checks it against the first (the reference).

    With ``"auto"``, LiteRT is left out when the whole pass would take TensorFlow less than
    ``LITERT_MIN_PASS_SECONDS`` (its conversion would cost more than it could save)."""
    start = time.perf_counter()
    names = list(builders)
    if asked == LITERT:
        names = [names[0], LITERT]
    forwards: dict[str, Forward] = {}
    samples: dict[str, list[float]] = {}
    tried: list[EngineCandidate] = []
    reference: np.ndarray | None = None
    for name in names:
        timed = [c.seconds_per_batch for c in tried if c.agrees and c.seconds_per_batch]
        if name == LITERT and asked == "auto" and images is not None and timed:
            estimate = min(timed) * images / max(len(batch), 1)
            if estimate < LITERT_MIN_PASS_SECONDS:
                left_out[LITERT] = (
                    f"the pass takes TensorFlow about {estimate:.1f} s, under the "
                    f"{LITERT_MIN_PASS_SECONDS:g} s where converting to LiteRT pays for itself"
                )
                continue
        t0 = time.perf_counter()
        try:
            forward = builders[name]()
            setup = time.perf_counter() - t0
            out = np.asarray(forward(batch), np.float32)
            for _ in range(WARMUP_CALLS - 1):
                forward(batch)
            times = [_timed_call(forward, batch)]
        except Exception as err:  # noqa: BLE001  (a candidate that cannot run is recorded)
            if reference is None:
                raise  # the reference itself failed: a bug, keep the traceback
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            error = f"{type(err).__name__}: {first[:300]}"
            tried.append(EngineCandidate(name, None, None, False, time.perf_counter() - t0, error))
            continue
        if reference is None:
            reference = out
        error_value = relative_error(out, reference)
        agrees = error_value <= PARITY_RTOL
        tried.append(EngineCandidate(name, min(times), error_value, agrees, setup))
        forwards[name], samples[name] = forward, times
    # The other timed calls round-robin, so a burst of load elsewhere hits every candidate
    # alike; the median of each counts.
    for _ in range(TIMED_CALLS - 1):
        for name in samples:
            samples[name].append(_timed_call(forwards[name], batch))
    tried = [
        dataclasses.replace(c, seconds_per_batch=statistics.median(samples[c.name]))
        if c.name in samples
        else c
        for c in tried
    ]
    ref = tried[0]
    usable = [c for c in tried if c.agrees]
    best = min(usable, key=lambda c: c.seconds_per_batch or float("inf"))
    why = (
        f"fastest of {len(tried)} candidates within relative error {PARITY_RTOL:g} of "
        f"{ref.name} (max|a-b|/max|b| on the probe batch), by at least {MIN_SPEEDUP:.2f}x"
    )
    if best is not ref and ref.seconds_per_batch < MIN_SPEEDUP * best.seconds_per_batch:
        best, why = ref, f"no candidate was {MIN_SPEEDUP:.2f}x faster than {ref.name}"
    rejected = [c for c in tried if not c.agrees]
    if rejected:
        not_used = "; ".join(
            c.error
            and f"{c.name} failed ({c.error})"
            or f"{c.name} differs by {c.relative_error:.2e} > {PARITY_RTOL:g}"
            for c in rejected
        )
        log.warning("Inference engine candidates not used: %s", not_used)
        why += "; not used: " + not_used
    if asked == LITERT:
        lite = tried[-1]
        if not lite.agrees:
            raise InvalidValueError(
                f"inference_engine='litert' is not used: {why.split('not used: ')[-1]}; use "
                "'auto' (which falls back) or 'tensorflow'."
            )
        best, why = lite, f"asked for; relative error {lite.relative_error:.2e} <= {PARITY_RTOL:g}"
    choice = EngineChoice(
        engine=best.name,
        asked=asked,
        probed=True,
        reason=why,
        batch_size=len(batch),
        relative_error=best.relative_error,
        probe_seconds=time.perf_counter() - start,
        candidates=tuple(tried),
        left_out=tuple(left_out.items()),
    )
    return forwards[best.name], choice
