"""Deploy an export: LiteRT (TFLite) float32 / float16 / int8 and ONNX files, each checked.

:func:`deploy` converts the Keras classifier of an export (the in-memory model, else the
export's ``model.keras``) with the converters TensorFlow and tf2onnx ship, and writes
the files next to the SavedModel::

    model.tflite          tflite       float32 weights and activations
    model_fp16.tflite     tflite-fp16  float16 weights, float32 activations
    model_int8.tflite     tflite-int8  int8 weights and activations, uint8 pixel input,
                                       int8 logits (dequantize with the output's scale)
    model.onnx            onnx         float32, dynamic batch (tf2onnx, opset ONNX_OPSET)
    labels.txt                         one class name per line, in class-id order

Every file takes RGB pixels 0..255 ``(batch, height, width, 3)`` at the export's input
size (preprocessing is inside) and returns logits ``(batch, num_classes)``. The labels
travel inside each file too: the ``.tflite`` files carry ``labels.txt`` as an associated
file (a zip archive appended to the flatbuffer, the packing MediaPipe's TFLite metadata
uses; ``zipfile.ZipFile(path)`` reads it and the interpreter ignores it), the ``.onnx``
file in its ``metadata_props`` (key ``labels``, newline-separated).

Each file is checked before anything is written:

1. parity on a probe batch against the Keras model: max |logit difference| <= 1e-4 for
   float32 files, <= 1e-2 for float16, each times the logit scale ``max(1, max |logit|)``
   (:func:`parity_bound`); for int8, top-1 agreement with the float model;
2. top-1 on the evaluation images (the run's test split) when given, and its drop from
   the Keras model's;
3. size on disk, batch-1 latency and batched images/s with the runtime a user would
   use (the LiteRT interpreter, onnxruntime).

The files are written atomically (:func:`zoo.files.atomic_path`) and listed with their
sha256 in the export's ``assets/zoo_manifest.json`` under ``"deployed"``, so
``zoo verify`` re-hashes them. All conversions run before the first file is written, so
a failing format leaves the export as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from recipes import export_format as fmt
from zoo.errors import InvalidValueError, MissingFileError, UnknownNameError, ZooError
from zoo.files import atomic_path, write_text_atomic

__all__ = [
    "DEPLOYED_KEY",
    "FORMATS",
    "DeployError",
    "DeployFormat",
    "DeployResult",
    "check_formats",
    "convert",
    "deploy",
    "labels_inside",
    "load_runner",
]

SAVED_MODEL = "saved_model"
DEPLOYED_KEY = fmt.DEPLOYED_KEY
LABELS_MEMBER = "labels.txt"  # the associated file inside a .tflite
ONNX_OPSET = 17
CALIBRATION_IMAGES = 300  # a few hundred training images calibrate int8
PARITY_IMAGES = 32  # probe images for int8 top-1 agreement when real images are given
INT8_MIN_AGREEMENT = 0.9  # on real images; on random pixels it is only reported


class DeployError(ZooError, RuntimeError):
    """A model could not be converted to a format (e.g. an op int8 cannot quantize)."""


@dataclass(frozen=True)
class DeployFormat:
    """One deployment format.

    Attributes:
        name: the name users pass (``--format``, ``[export] formats``).
        file: the file written next to the SavedModel.
        precision: ``"float32"``, ``"float16"`` or ``"int8"``.
        runtime: ``"litert"`` or ``"onnxruntime"``.
        tolerance: max |logit difference| to the Keras model per unit of logit scale
            (:func:`parity_bound`); None for int8 (top-1 agreement instead).
    """

    name: str
    file: str
    precision: str
    runtime: str
    tolerance: float | None


FORMATS: dict[str, DeployFormat] = {
    f.name: f
    for f in (
        DeployFormat("tflite", "model.tflite", "float32", "litert", 1e-4),
        DeployFormat("tflite-fp16", "model_fp16.tflite", "float16", "litert", 1e-2),
        DeployFormat("tflite-int8", "model_int8.tflite", "int8", "litert", None),
        DeployFormat("onnx", "model.onnx", "float32", "onnxruntime", 1e-4),
    )
}


@dataclass(frozen=True)
class DeployResult:
    """What :func:`deploy` measured for one written file.

    Attributes:
        format: the format name.
        file: the file name, relative to the export directory.
        sha256: of the file's bytes.
        bytes: size on disk.
        parity: max |logit difference| (float formats) or top-1 agreement 0..1 (int8).
        parity_images: how many probe images ``parity`` is over.
        passed: whether parity held.
        top1: top-1 on the evaluation images, or None when none were given.
        top1_drop: the Keras model's top-1 minus ``top1`` (points of 0..1).
        latency_ms: median batch-1 latency, milliseconds.
        images_per_s: batched throughput, images per second.
        batch: the batch size of ``images_per_s``.
    """

    format: str
    file: str
    sha256: str
    bytes: int
    parity: float
    parity_images: int
    passed: bool
    top1: float | None = None
    top1_drop: float | None = None
    latency_ms: float | None = None
    images_per_s: float | None = None
    batch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields, for report.json."""
        return asdict(self)


def check_formats(names: Iterable[str]) -> list[str]:
    """Validates format names; returns the deployable ones (``saved_model`` dropped).

    Raises:
        UnknownNameError: any name that is neither ``saved_model`` nor in FORMATS
            (all of them listed, with the valid names).
    """
    names = list(names)
    unknown = [n for n in names if n != SAVED_MODEL and n not in FORMATS]
    if unknown:
        raise UnknownNameError(
            f"Unknown export format{'s' if len(unknown) > 1 else ''} {unknown}; choose from "
            f"{[SAVED_MODEL, *FORMATS]}."
        )
    return list(dict.fromkeys(n for n in names if n != SAVED_MODEL))


# -- conversion ---------------------------------------------------------------------------


def _serving_saved_model(model: keras.Model, directory: str) -> None:
    """Writes a logits-only SavedModel (signature ``serve``) for the converters.

    ExportArchive -> SavedModel -> ``from_saved_model`` is TensorFlow's path for Keras 3
    (a concrete function over Keras variables converts them as unresolved resources).
    """
    import tensorflow as tf

    height, width = int(model.input_shape[1]), int(model.input_shape[2])

    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"logits": tf.cast(model(images, training=False), tf.float32)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = tf.TensorSpec((None, height, width, 3), tf.float32, name="images")
    archive.add_endpoint("serve", serve, [spec])
    archive.write_out(directory, verbose=False)


def convert(
    model: keras.Model,
    name: str,
    calibration: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    serving_dir: str | Path | None = None,
) -> bytes:
    """Converts ``model`` (pixels 0..255 -> logits) to one format's file bytes.

    Args:
        model: a classifier: float32 ``(batch, height, width, 3)`` pixels 0..255 ->
            logits ``(batch, num_classes)``, preprocessing inside.
        name: a key of :data:`FORMATS`.
        calibration: float32 training images ``(n, height, width, 3)`` 0..255 for
            ``tflite-int8`` (never test images).
        class_names: stored inside the file (see the module doc).
        serving_dir: an empty or earlier-used directory where the logits-only SavedModel
            the TFLite converter reads is written once and reused (it takes about as
            long as a conversion); default a temporary one per call.

    Returns:
        The file's bytes.

    Raises:
        UnknownNameError: ``name`` is not a format.
        InvalidValueError: ``tflite-int8`` without calibration images.
        DeployError: the converter refused the model; for int8, naming the op that
            cannot be fully integer-quantized.
    """
    if not check_formats([name]):
        raise InvalidValueError("saved_model is written by recipes.export, not convert().")
    if name == "onnx":
        data = _convert_onnx(model, class_names)
    else:
        data = _convert_tflite(model, name, calibration, serving_dir)
        if class_names is not None:
            data = _append_labels(data, class_names)
    return data


def _convert_tflite(
    model: keras.Model, name: str, calibration: np.ndarray | None, serving_dir: Any
) -> bytes:
    import tensorflow as tf

    with contextlib.ExitStack() as stack:
        directory = serving_dir or stack.enter_context(tempfile.TemporaryDirectory())
        if not (Path(directory) / "saved_model.pb").is_file():
            _serving_saved_model(model, str(directory))
        converter = tf.lite.TFLiteConverter.from_saved_model(
            str(directory), signature_keys=["serve"]
        )
        _configure(converter, name, calibration, model)
        # ConverterError is what the converter raises for an op or model it cannot
        # convert (a user's model); anything else is a bug and keeps its traceback.
        from tensorflow.lite.python.convert_phase import ConverterError

        try:
            data = bytes(converter.convert())
        except ConverterError as error:
            raise DeployError(_conversion_failure(name, error)) from error
    if name == "tflite-int8":
        _check_full_integer(data)
    return data


def _check_full_integer(data: bytes) -> None:
    """Raises when the converter left an op in float (it does so silently for some ops)."""
    interpreter = _interpreter_class()(model_content=data)
    tensors = {t["index"]: t["dtype"] for t in interpreter.get_tensor_details()}
    floating = sorted(
        {
            op["op_name"]
            for op in interpreter._get_ops_details()
            if op["op_name"] not in ("QUANTIZE", "DEQUANTIZE")
            and any(
                tensors.get(i) in (np.float32, np.float16)
                for i in (*op["inputs"], *op["outputs"])
                if i >= 0
            )
        }
    )
    if floating:
        raise DeployError(
            f"The model cannot be fully integer-quantized: op {', '.join(floating)} has no "
            "int8 kernel and stays float; deploy it as tflite or tflite-fp16, or replace "
            "that layer."
        )


def _configure(
    converter: Any, name: str, calibration: np.ndarray | None, model: keras.Model
) -> None:
    import tensorflow as tf

    if name == "tflite-fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif name == "tflite-int8":
        images = _calibration_images(calibration, model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[np.newaxis]] for image in images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.int8


def _calibration_images(calibration: np.ndarray | None, model: keras.Model) -> np.ndarray:
    if calibration is None or len(calibration) == 0:
        raise InvalidValueError(
            "tflite-int8 needs calibration images and got none: pass a few hundred "
            "training images (float32 pixels 0..255, never test images)."
        )
    images = np.asarray(calibration, np.float32)
    expected = (int(model.input_shape[1]), int(model.input_shape[2]), 3)
    if images.ndim != 4 or images.shape[1:] != expected:
        raise InvalidValueError(
            f"Calibration images have shape {images.shape}; expected (n, *{expected}) "
            "pixels 0..255 at the model's input size."
        )
    return images[:CALIBRATION_IMAGES]


def _conversion_failure(name: str, error: BaseException) -> str:
    text = str(error)
    ops = sorted(set(re.findall(r"'?(?:tf|tfl)\.(\w+)'? op", text)))
    ops += sorted(set(re.findall(r"op: '?(\w+)'?", text)) - set(ops))
    if name == "tflite-int8" and ops:
        return (
            f"The model cannot be fully integer-quantized: op {', '.join(ops)} has no int8 "
            "kernel; deploy it as tflite or tflite-fp16, or replace that layer."
        )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"Converting to {name} failed: {lines[0] if lines else type(error).__name__}"[:400]


def _append_labels(data: bytes, class_names: Sequence[str]) -> bytes:
    """The .tflite bytes with labels.txt appended as a zip archive (associated file)."""
    buffer = io.BytesIO()
    buffer.write(data)
    with zipfile.ZipFile(buffer, "a", zipfile.ZIP_STORED) as archive:
        archive.writestr(LABELS_MEMBER, _labels_text(class_names))
    return buffer.getvalue()


def _labels_text(class_names: Sequence[str]) -> str:
    return "\n".join(class_names) + "\n"


def _convert_onnx(model: keras.Model, class_names: Sequence[str] | None) -> bytes:
    try:
        import tf2onnx
    except ImportError:
        raise DeployError(
            "The onnx format needs tf2onnx and onnxruntime: pip install 'zoo[deploy]'."
        ) from None
    import tensorflow as tf

    height, width = int(model.input_shape[1]), int(model.input_shape[2])

    @tf.function
    def serve(images: tf.Tensor) -> tf.Tensor:
        return tf.cast(model(images, training=False), tf.float32)

    spec = [tf.TensorSpec((None, height, width, 3), tf.float32, "images")]
    try:
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=ONNX_OPSET)
    # tf2onnx has no error base class: a model it cannot convert fails its checks
    # (``make_sure``: ValueError), an op handler (RuntimeError) or an unported op
    # (NotImplementedError). Anything else is a bug and keeps its traceback.
    except (ValueError, RuntimeError, NotImplementedError) as error:
        raise DeployError(_conversion_failure("onnx", error)) from error
    if class_names is not None:
        entry = proto.metadata_props.add()
        entry.key, entry.value = "labels", "\n".join(class_names)
    return proto.SerializeToString()


def labels_inside(path: str | Path) -> list[str] | None:
    """The class names stored inside a deployed file, or None when it holds none."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        return props["labels"].split("\n") if "labels" in props else None
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.read(LABELS_MEMBER).decode("utf-8").splitlines()
    except (zipfile.BadZipFile, KeyError):
        return None


# -- runtimes -------------------------------------------------------------------------------


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # TensorFlow still ships the same (deprecated) interpreter
        import tensorflow as tf

        return tf.lite.Interpreter
    return Interpreter


class _LiteRT:
    """Runs a .tflite with the LiteRT interpreter: float32 pixels 0..255 -> float logits.

    ``threads`` defaults to the cores this process may use: the interpreter's own default
    (``num_threads=None``) is one thread.
    """

    def __init__(self, model: bytes | str | Path, threads: int | None = None) -> None:
        Interpreter = _interpreter_class()  # noqa: N806
        kind = "model_content" if isinstance(model, bytes) else "model_path"
        self._interpreter = Interpreter(
            **{kind: model if kind == "model_content" else str(model)},
            num_threads=threads or len(os.sched_getaffinity(0)),
        )
        self._batch = None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        it = self._interpreter
        (inp,) = it.get_input_details()
        if self._batch != len(images):
            it.resize_tensor_input(inp["index"], list(images.shape))
            it.allocate_tensors()
            self._batch = len(images)
            (inp,) = it.get_input_details()
        it.set_tensor(inp["index"], _quantize(images, inp))
        it.invoke()
        (out,) = it.get_output_details()
        return _dequantize(it.get_tensor(out["index"]), out)


def _quantize(images: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = detail["dtype"]
    if dtype == np.float32:
        return images.astype(np.float32)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(images / scale + zero), info.min, info.max).astype(dtype)


def _dequantize(values: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if values.dtype == np.float32:
        return values.copy()
    scale, zero = detail["quantization"]
    return ((values.astype(np.float32) - zero) * scale).astype(np.float32)


class _OnnxRuntime:
    def __init__(self, model: bytes | str | Path) -> None:
        import onnxruntime

        source = model if isinstance(model, bytes) else str(model)
        self._session = onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: images.astype(np.float32)})[0]


def load_runner(path: str | Path) -> Callable[[np.ndarray], np.ndarray]:
    """A callable for a deployed file: float32 pixels ``(batch, h, w, 3)`` -> logits.

    Raises:
        MissingFileError: no such file.
        InvalidValueError: not a ``.tflite`` or ``.onnx`` file.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"No deployed model at {path}; export it with `zoo export`.")
    if path.suffix == ".tflite":
        return _LiteRT(path)
    if path.suffix == ".onnx":
        return _OnnxRuntime(path)
    raise InvalidValueError(f"{path} is neither a .tflite nor an .onnx file.")


def _runner(spec: DeployFormat, data: bytes) -> Callable[[np.ndarray], np.ndarray]:
    return _OnnxRuntime(data) if spec.runtime == "onnxruntime" else _LiteRT(data)


# -- checks ----------------------------------------------------------------------------------


def _logits(run: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch: int = 32):
    return np.concatenate([run(images[i : i + batch]) for i in range(0, len(images), batch)])


def _keras_logits(model: keras.Model, images: np.ndarray) -> np.ndarray:
    out = model.predict(images, batch_size=32, verbose=0)
    return np.asarray(out, np.float32)


def _speed(run: Callable[[np.ndarray], np.ndarray], probe: np.ndarray, batch: int):
    """Median batch-1 latency (ms) and batched images/s, a fraction of a second each."""
    one = probe[:1]
    run(one)
    times = []
    start = time.perf_counter()
    while len(times) < 5 or (time.perf_counter() - start < 0.3 and len(times) < 200):
        t = time.perf_counter()
        run(one)
        times.append(time.perf_counter() - t)
    many = np.resize(probe, (batch, *probe.shape[1:]))
    run(many)
    rounds, start = 0, time.perf_counter()
    while rounds < 2 or time.perf_counter() - start < 0.3:
        run(many)
        rounds += 1
    return 1000 * float(np.median(times)), batch * rounds / (time.perf_counter() - start)


# (images, labels) arrays, or a callable returning an iterable of such batches.
Evaluation = tuple[np.ndarray, np.ndarray] | Callable[[], Iterable[tuple[Any, Any]]]


@dataclass(frozen=True)
class _Probe:
    images: np.ndarray
    logits: np.ndarray
    real: bool  # real images (not random pixels): int8 agreement is a pass/fail check


def _check(
    spec: DeployFormat,
    data: bytes,
    probe: _Probe,
    evaluation: tuple[Callable[[], Iterable[Any]], float] | None,
    batch: int,
) -> dict[str, Any]:
    run = _runner(spec, data)
    logits = _logits(run, probe.images)
    if spec.tolerance is not None:
        parity = float(np.max(np.abs(logits - probe.logits)))
        passed = parity <= parity_bound(spec.tolerance, probe.logits)
    else:
        parity = float(np.mean(logits.argmax(-1) == probe.logits.argmax(-1)))
        passed = parity >= INT8_MIN_AGREEMENT or not probe.real
    found: dict[str, Any] = {"parity": parity, "parity_images": len(probe.images)}
    found["passed"] = passed
    if evaluation is not None:
        batches, reference = evaluation
        top1 = _top1(lambda images: _logits(run, images), batches)
        found.update(top1=top1, top1_drop=reference - top1)
    found["latency_ms"], found["images_per_s"] = _speed(run, probe.images, batch)
    found["batch"] = batch
    return found


# -- the deploy step -------------------------------------------------------------------------


def deploy(
    export_dir: str | Path,
    formats: Iterable[str],
    model: keras.Model | None = None,
    calibration: np.ndarray | None = None,
    evaluation: Evaluation | None = None,
    batch: int = 32,
    float_top1: float | None = None,
) -> list[DeployResult]:
    """Converts, checks and writes each format next to the export's SavedModel.

    Args:
        export_dir: a directory written by ``recipes.export.export_saved_model``.
        formats: format names (``saved_model`` is accepted and skipped: it is there).
        model: the Keras model the export came from; default its ``model.keras``.
        calibration: float32 training images ``(n, height, width, 3)`` 0..255 that
            calibrate ``tflite-int8`` (the first ``CALIBRATION_IMAGES`` are used).
        evaluation: the run's test split, for top-1 per format: ``(images, labels)``
            arrays, or a callable returning an iterable of such batches (streamed, so
            a large split never sits in memory at once).
        batch: batch size of the throughput measurement.
        float_top1: the Keras model's top-1 on ``evaluation`` when already known (the
            runner's evaluation); computed here otherwise.

    Returns:
        One :class:`DeployResult` per format, in the order given.

    Raises:
        UnknownNameError: an unknown format name.
        MissingFileError: ``export_dir`` is not an export, or has no ``model.keras``.
        InvalidValueError: ``tflite-int8`` with no calibration images.
        DeployError: a converter refused the model, or a file failed its parity check;
            nothing was written.
    """
    names = check_formats(formats)
    directory = Path(export_dir)
    meta = _read_metadata(directory)
    if model is None:
        model = load_keras_model(directory)
    if not names:
        return []
    batches = _as_batches(evaluation)
    probe = _make_probe(model, meta, calibration, batches)
    reference = None
    if batches is not None:
        if float_top1 is None:
            float_top1 = _top1(lambda images: _keras_logits(model, images), batches)
        reference = (batches, float_top1)
    files, results, failures = {}, [], []
    # One logits-only SavedModel serves every TFLite conversion of this call.
    with tempfile.TemporaryDirectory(prefix="zoo-deploy-") as serving_dir:
        for name in names:
            spec = FORMATS[name]
            data = convert(model, name, calibration, meta["class_names"], serving_dir)
            found = _check(spec, data, probe, reference, batch)
            if not found["passed"]:
                failures.append(f"{name}: parity {found['parity']:.3g} ({_parity_rule(spec)})")
            files[spec.file] = data
            results.append(DeployResult(name, spec.file, _sha256(data), len(data), **found))
    if failures:
        raise DeployError(
            "Deployed files failed their parity check, so none was written: " + "; ".join(failures)
        )
    _write(directory, files, results, meta["class_names"])
    return results


def _as_batches(evaluation: Evaluation | None) -> Callable[[], Iterable[Any]] | None:
    if evaluation is None or callable(evaluation):
        return evaluation
    images, labels = evaluation
    return lambda: [(images[i : i + 256], labels[i : i + 256]) for i in range(0, len(images), 256)]


def _top1(logits_of: Callable[[np.ndarray], np.ndarray], batches: Callable[[], Iterable]) -> float:
    correct = total = 0
    for images, labels in batches():
        predicted = logits_of(np.asarray(images, np.float32)).argmax(-1)
        correct += int(np.sum(predicted == np.asarray(labels)))
        total += len(predicted)
    return correct / max(total, 1)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parity_bound(tolerance: float, logits: np.ndarray) -> float:
    """The largest |logit difference| a float format may show: ``tolerance`` per unit of
    the logit scale, ``tolerance * max(1, max |logit|)``.

    Relative, not absolute, because a format's rounding error grows with the logits it
    rounds: float16 keeps 11 significant bits (unit roundoff 2**-11, 4.9e-4), and its
    relative error accumulates through the layers (EfficientNet-Lite0 on the main job:
    max |difference| 0.025 on logits up to 5.1, 0.5% of the scale). Logits within
    +-1 keep the absolute bound.

    Args:
        tolerance: the format's :attr:`DeployFormat.tolerance`.
        logits: the Keras model's logits on the probe, ``(n, classes)``.
    """
    return tolerance * max(1.0, float(np.max(np.abs(logits), initial=0.0)))


def _parity_rule(spec: DeployFormat) -> str:
    if spec.tolerance is None:
        return f"top-1 agreement must be >= {INT8_MIN_AGREEMENT}"
    return f"max |logit difference| must be <= {spec.tolerance} x max(1, max |logit|)"


def _read_metadata(directory: Path) -> dict[str, Any]:
    if not fmt.is_export(directory):
        raise MissingFileError(
            f"{directory} is not a zoo export (needs saved_model.pb and "
            f"assets/{fmt.MANIFEST_FILE}); point to a run's export/ directory."
        )
    return json.loads((directory / "assets" / fmt.METADATA_FILE).read_text("utf-8"))


def load_keras_model(directory: str | Path) -> keras.Model:
    """The export's ``model.keras``, loaded with ``safe_mode=True``.

    Raises:
        MissingFileError: the export has no ``model.keras``.
    """
    import zoo.classifier  # noqa: F401  (registers zoo's layers for loading)

    path = Path(directory) / fmt.KERAS_FILE
    if not path.is_file():
        raise MissingFileError(
            f"{directory} has no {fmt.KERAS_FILE}, so there is no Keras model to convert; "
            "re-export the run with `zoo run` (exports include it)."
        )
    return keras.saving.load_model(path, safe_mode=True)


def _make_probe(
    model: keras.Model,
    meta: dict[str, Any],
    calibration: np.ndarray | None,
    batches: Callable[[], Iterable[Any]] | None,
) -> _Probe:
    """Real images when there are some (evaluation first), else the fixed random probe."""
    first = next(iter(batches()), None) if batches is not None else None
    for source in (None if first is None else first[0], calibration):
        if source is not None and len(source):
            images = np.asarray(source[:PARITY_IMAGES], np.float32)
            return _Probe(images, _keras_logits(model, images), True)
    images = fmt.probe_batch(meta["input_size"])
    return _Probe(images, _keras_logits(model, images), False)


def _write(
    directory: Path, files: dict[str, bytes], results: list[DeployResult], names: list[str]
) -> None:
    """Writes each file atomically, then labels.txt, then the manifest entries."""
    for file, data in files.items():
        with atomic_path(directory / file) as tmp:
            tmp.write_bytes(data)
    labels = _labels_text(names)
    write_text_atomic(directory / fmt.LABELS_FILE, labels)
    manifest_path = directory / "assets" / fmt.MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text("utf-8"))
    deployed = dict(manifest.get(DEPLOYED_KEY) or {})
    for result in results:
        deployed[result.file] = {
            "format": result.format,
            "sha256": result.sha256,
            "bytes": result.bytes,
        }
    deployed[fmt.LABELS_FILE] = {
        "format": "labels",
        "sha256": _sha256(labels.encode("utf-8")),
        "bytes": len(labels.encode("utf-8")),
    }
    manifest[DEPLOYED_KEY] = deployed
    write_text_atomic(manifest_path, json.dumps(manifest, sort_keys=True, indent=2) + "\n")


# -- zoo export ------------------------------------------------------------------------------


def resolve_export_dir(path: str | Path) -> Path:
    """An export directory, given it or a run directory holding ``export/``."""
    path = Path(path)
    return path / "export" if not fmt.is_export(path) and fmt.is_export(path / "export") else path


def load_calibration(path: str | Path, input_size: Sequence[int]) -> np.ndarray:
    """Calibration images from a ``.npy`` array or a directory of image files.

    Images from files are decoded to RGB and resized bilinearly to ``input_size``.

    Returns:
        float32 pixels 0..255 ``(n, height, width, 3)``.

    Raises:
        MissingFileError: no such file or directory.
        InvalidValueError: no images there (an empty calibration set).
    """
    import tensorflow as tf

    from zoo.data.images import decode_rgb

    path = Path(path)
    if path.is_file() and path.suffix == ".npy":
        images = np.load(path).astype(np.float32)
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())[:CALIBRATION_IMAGES]
        images = [tf.image.resize(decode_rgb(p), tuple(input_size)).numpy() for p in files]
        images = np.stack(images).astype(np.float32) if images else np.zeros((0,))
    else:
        raise MissingFileError(
            f"No calibration images at {path}; pass a .npy array (n, height, width, 3) or "
            "a directory of training images."
        )
    if len(images) == 0:
        raise InvalidValueError(
            f"The calibration set {path} is empty; tflite-int8 needs a few hundred "
            "training images (never test images)."
        )
    return images


def main_export(
    path: str,
    formats: Sequence[str],
    calibration: str | None = None,
    run_inputs: Callable[[bool], dict[str, Any] | None] | None = None,
) -> int:
    """``zoo export``: writes the formats into an export, prints what each measured.

    Args:
        path: an export directory, or the run directory holding it.
        formats: format names.
        calibration: ``--calibration``: a directory of training images or a ``.npy``.
        run_inputs: ``recipes.runner.run_deploy_inputs`` for ``path``: called once the
            formats are checked, with whether the run's own calibration images are
            needed (int8 asked, no ``calibration`` given); it gives the run's evaluation
            split too, or None when ``path`` is not in a run directory.

    Raises:
        ZooError: unknown format, no export or Keras model, empty or missing
            calibration set, a model a converter refuses; the CLI prints one line, exit 2.
    """
    names = check_formats(formats)
    directory = resolve_export_dir(path)
    meta = _read_metadata(directory)
    own_calibration = "tflite-int8" in names and calibration is None
    kwargs = dict((run_inputs(own_calibration) if run_inputs else None) or {})
    if calibration is not None:
        kwargs["calibration"] = load_calibration(calibration, meta["input_size"])
    elif "tflite-int8" in names and kwargs.get("calibration") is None:
        raise InvalidValueError(
            "tflite-int8 needs calibration images: pass --calibration DIR_OR_NPY with a "
            "few hundred training images (never test images), or give the run directory."
        )
    results = deploy(directory, names, **kwargs)
    from recipes.text import print_table

    rows = [("format", "file", "MB", "parity", "top-1 (drop)", "batch-1 ms", "images/s")]
    for r in results:
        top1 = "-" if r.top1 is None else f"{r.top1:.4f} ({r.top1_drop or 0.0:+.4f})"
        rows.append(
            (
                r.format,
                r.file,
                f"{r.bytes / 1e6:.2f}",
                f"{r.parity:.3g}",
                top1,
                f"{r.latency_ms:.2f}",
                f"{r.images_per_s:.0f}",
            )
        )
    print_table(rows)
    print(f"wrote {len(results)} files into {directory}; `zoo verify {directory}` re-hashes them")
    return 0
