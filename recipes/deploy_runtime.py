"""Runtimes for deployed files: the LiteRT interpreter and onnxruntime, as a user runs them.

:func:`load_runner` gives a callable: float32 pixels 0..255 ``(batch, height, width, 3)``
-> ``{output name: float32 (batch, num_classes)}``: ``probabilities`` for a ``.tflite``
(its one output; the int8 file's uint8 scores dequantized), ``logits`` and
``probabilities`` for an ``.onnx``. :func:`labels_inside` reads the class names a file
carries (a ``.tflite``'s metadata labels, an ``.onnx``'s ``metadata_props``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from recipes import export_format as fmt
from zoo.errors import InvalidValueError, MissingFileError

Runner = Callable[[np.ndarray], dict[str, np.ndarray]]


def interpreter_class() -> Any:
    """LiteRT's ``Interpreter`` (``ai_edge_litert``), else TensorFlow's deprecated copy."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # TensorFlow still ships the same (deprecated) interpreter
        import tensorflow as tf

        return tf.lite.Interpreter
    return Interpreter


class LiteRT:
    """Runs a .tflite with the LiteRT interpreter: float32 pixels 0..255 -> probabilities.

    ``threads`` defaults to the cores this process may use: the interpreter's own default
    (``num_threads=None``) is one thread. One instance serves one thread at a time.
    """

    def __init__(self, model: bytes | str | Path, threads: int | None = None) -> None:
        Interpreter = interpreter_class()  # noqa: N806
        kind = "model_content" if isinstance(model, bytes) else "model_path"
        self._interpreter = Interpreter(
            **{kind: model if kind == "model_content" else str(model)},
            num_threads=threads or len(os.sched_getaffinity(0)),
        )
        self._batch = None

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
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
        return {fmt.PROBABILITIES: dequantize(it.get_tensor(out["index"]), out)}


def _quantize(images: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = detail["dtype"]
    if dtype == np.float32:
        return images.astype(np.float32)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(images / scale + zero), info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """A LiteRT output as float32: ``scale * (q - zero_point)`` for a quantized tensor.

    Args:
        values: the output tensor's values.
        detail: its entry of ``Interpreter.get_output_details()``.
    """
    if values.dtype == np.float32:
        return values.copy()
    scale, zero = detail["quantization"]
    return ((values.astype(np.float32) - zero) * scale).astype(np.float32)


class OnnxRuntime:
    """Runs an .onnx with onnxruntime's CPU provider: float32 pixels -> its named outputs."""

    def __init__(self, model: bytes | str | Path) -> None:
        import onnxruntime

        source = model if isinstance(model, bytes) else str(model)
        self._session = onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._outputs = [o.name for o in self._session.get_outputs()]

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        values = self._session.run(None, {self._input: images.astype(np.float32)})
        return dict(zip(self._outputs, values, strict=True))


def load_runner(path: str | Path) -> Runner:
    """A callable for a deployed file (see the module doc for what it returns).

    Raises:
        MissingFileError: no such file.
        InvalidValueError: not a ``.tflite`` or ``.onnx`` file.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"No deployed model at {path}; export it with `zoo export`.")
    if path.suffix == ".tflite":
        return LiteRT(path)
    if path.suffix == ".onnx":
        return OnnxRuntime(path)
    raise InvalidValueError(f"{path} is neither a .tflite nor an .onnx file.")


def runner_for(spec: fmt.DeployFormat, data: bytes) -> Runner:
    """A runner over a file's bytes, by its format's runtime."""
    return OnnxRuntime(data) if spec.runtime == "onnxruntime" else LiteRT(data)


def labels_inside(path: str | Path) -> list[str] | None:
    """The class names stored inside a deployed file, or None when it holds none."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        return props["labels"].split("\n") if "labels" in props else None
    from recipes import tflite_metadata

    found = tflite_metadata.read(path)
    return None if found is None else found["labels"]
