"""Converters: a Keras classifier to a LiteRT (TFLite) or ONNX file's bytes.

:func:`convert` uses the converters TensorFlow and tf2onnx ship. Every file takes RGB
pixels 0..255 ``(batch, height, width, 3)`` at the model's input size (preprocessing is
inside) and returns:

- ``.tflite``: one output, ``probabilities`` ``(batch, num_classes)`` (softmax of the
  logits over the export's calibration temperature, or sigmoid per class for
  multi-label), with TFLite Model Metadata (:mod:`recipes.tflite_metadata`)
  so MediaPipe Tasks loads it and its ``score_threshold`` is a probability. The int8 file
  is what MediaPipe takes and Model Maker's ``QuantizationConfig.for_int8`` writes: int8
  weights and activations, uint8 pixel input, uint8 probabilities (dequantize with the
  output's quantization: ``p = scale * (q - zero_point)``, scale 1/256 and zero point 0
  for softmax and sigmoid, so 255 reads 0.996);
- ``.onnx``: two outputs named ``logits`` and ``probabilities``, as the SavedModel's
  signatures name them, and the class names in ``metadata_props`` (key ``labels``,
  newline-separated).
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from recipes import export_format as fmt
from recipes import tflite_metadata
from zoo.errors import InvalidValueError, ZooError

ONNX_OPSET = 17
CALIBRATION_IMAGES = 300  # a few hundred training images calibrate int8


class DeployError(ZooError, RuntimeError):
    """A model could not be converted to a format (e.g. an op int8 cannot quantize)."""


def scores(logits: Any, multi_label: bool, temperature: float = 1.0) -> Any:
    """The ``probabilities`` output every exported format computes from the logits.

    Args:
        logits: float32 tensor ``(batch, num_classes)``.
        multi_label: sigmoid per class instead of a softmax over the classes.
        temperature: the softmax's calibration temperature ``T`` (temperature scaling,
            Guo et al. 2017): ``softmax(logits / T)``; ignored for multi-label.

    Returns:
        A float32 tensor ``(batch, num_classes)``; numpy's twin is
        :func:`recipes.export_format.probabilities`.
    """
    import tensorflow as tf

    if multi_label:
        return tf.sigmoid(logits)
    if temperature != 1.0:  # as trained otherwise: no extra op in the graph
        logits = logits / tf.constant(temperature, logits.dtype)
    return tf.nn.softmax(logits, axis=-1)


def _serving_saved_model(model: keras.Model, directory: str, info: Any) -> None:
    """Writes a probabilities-only SavedModel (signature ``serve``) for the TFLite converter.

    ExportArchive -> SavedModel -> ``from_saved_model`` is TensorFlow's path for Keras 3
    (a concrete function over Keras variables converts them as unresolved resources).
    """
    import tensorflow as tf

    height, width = int(model.input_shape[1]), int(model.input_shape[2])

    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        logits = tf.cast(model(images, training=False), tf.float32)
        return {fmt.PROBABILITIES: scores(logits, info.multi_label, info.temperature)}

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
    info: tflite_metadata.ModelInfo | None = None,
) -> bytes:
    """Converts ``model`` (pixels 0..255 -> logits) to one format's file bytes.

    Args:
        model: a classifier: float32 ``(batch, height, width, 3)`` pixels 0..255 ->
            logits ``(batch, num_classes)``, preprocessing inside.
        name: a key of :data:`recipes.export_format.FORMATS`.
        calibration: float32 training images ``(n, height, width, 3)`` 0..255 for
            ``tflite-int8`` (never test images).
        class_names: the classes in class-id order, stored inside the file (ignored
            when ``info`` is given: its class names are used); default the model's own
            (``build_classifier``'s ``class_names``), else ``class 0``, ``class 1``, ...
        serving_dir: an empty or earlier-used directory where the probabilities-only
            SavedModel the TFLite converter reads is written once and reused (it takes
            about as long as a conversion; reuse it only for one model); default a
            temporary one per call.
        info: the ``.tflite`` metadata (name, version, licences, multi-label); default a
            single-label model named ``classifier`` with ``class_names``.

    Returns:
        The file's bytes.

    Raises:
        UnknownNameError: ``name`` is not a format.
        InvalidValueError: ``tflite-int8`` without calibration images.
        DeployError: the converter refused the model; for int8, naming the op that
            cannot be fully integer-quantized.
    """
    if not fmt.check_formats([name]):
        raise InvalidValueError("saved_model is written by recipes.export, not convert().")
    if info is None:
        names = tuple(class_names) if class_names is not None else _class_names(model)
        info = tflite_metadata.ModelInfo("classifier", "An image classifier.", "", "", names)
    if name == "onnx":
        return _convert_onnx(model, info)
    data = _convert_tflite(model, name, calibration, serving_dir, info)
    return tflite_metadata.write(data, info)


def _class_names(model: keras.Model) -> tuple[str, ...]:
    """A zoo classifier's class names, else ``class 0``, ``class 1``, ... per logit."""
    names = getattr(model, "class_names", None)
    if names:
        return tuple(names)
    return tuple(f"class {i}" for i in range(int(model.output_shape[-1])))


def _convert_tflite(
    model: keras.Model,
    name: str,
    calibration: np.ndarray | None,
    serving_dir: Any,
    info: tflite_metadata.ModelInfo,
) -> bytes:
    import tensorflow as tf

    with contextlib.ExitStack() as stack:
        directory = serving_dir or stack.enter_context(tempfile.TemporaryDirectory())
        if not (Path(directory) / "saved_model.pb").is_file():
            _serving_saved_model(model, str(directory), info)
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
        _check_pixel_input(data)
    return data


def _check_pixel_input(data: bytes) -> None:
    """Raises unless the int8 file's uint8 input is the pixels as they are (scale 1, zero 0)."""
    from recipes.deploy_runtime import interpreter_class

    (detail,) = interpreter_class()(model_content=data).get_input_details()
    scale, zero = detail["quantization"]
    if detail["dtype"] != np.uint8 or abs(scale - 1.0) > 1e-6 or zero != 0:
        raise DeployError(
            f"The int8 file's input is {np.dtype(detail['dtype']).name} with scale {scale} "
            f"and zero point {zero}; MediaPipe feeds uint8 pixels as they are (scale 1, zero 0)."
        )


def _check_full_integer(data: bytes) -> None:
    """Raises when the converter left an op in float (it does so silently for some ops)."""
    from recipes.deploy_runtime import interpreter_class

    interpreter = interpreter_class()(model_content=data)
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
        images = _calibration_images(calibration, model).copy()
        # The input's quantization follows the calibration's pixel range: one pixel at 0
        # and one at 255 make it scale 1, zero point 0, so uint8 pixels go in as they
        # are (MediaPipe feeds them so, whatever the quantization says).
        images[0, 0, 0, :], images[0, -1, -1, :] = 0.0, 255.0
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[np.newaxis]] for image in images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # What MediaPipe Tasks takes (Model Maker's QuantizationConfig.for_int8).
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8


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


def _convert_onnx(model: keras.Model, info: tflite_metadata.ModelInfo) -> bytes:
    try:
        import tf2onnx
    except ImportError:
        raise DeployError(
            "The onnx format needs tf2onnx and onnxruntime: pip install 'zoo[deploy]'."
        ) from None
    import tensorflow as tf

    height, width = int(model.input_shape[1]), int(model.input_shape[2])

    @tf.function
    def serve(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        logits = tf.cast(model(images, training=False), tf.float32)
        return logits, scores(logits, info.multi_label, info.temperature)

    spec = [tf.TensorSpec((None, height, width, 3), tf.float32, "images")]
    try:
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=ONNX_OPSET)
    # tf2onnx has no error base class: a model it cannot convert fails its checks
    # (``make_sure``: ValueError), an op handler (RuntimeError) or an unported op
    # (NotImplementedError). Anything else is a bug and keeps its traceback.
    except (ValueError, RuntimeError, NotImplementedError) as error:
        raise DeployError(_conversion_failure("onnx", error)) from error
    _name_outputs(proto, fmt.FORMATS["onnx"].outputs)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "labels", "\n".join(info.class_names)
    if info.temperature != 1.0:
        entry = proto.metadata_props.add()
        entry.key, entry.value = fmt.TEMPERATURE_KEY, repr(info.temperature)
    return proto.SerializeToString()


def _name_outputs(proto: Any, names: Sequence[str]) -> None:
    """Renames the graph's outputs (tf2onnx names them ``Identity:0``, ...) in order."""
    renames = {out.name: new for out, new in zip(proto.graph.output, names, strict=True)}
    for node in proto.graph.node:
        node.output[:] = [renames.get(n, n) for n in node.output]
        node.input[:] = [renames.get(n, n) for n in node.input]
    for out in proto.graph.output:
        out.name = renames[out.name]
