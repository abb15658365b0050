"""Predict with an export: top-k class names and probabilities for images of any kind.

:class:`Predictor` loads a directory written by :func:`recipes.export.export_saved_model`
with ``tf.saved_model.load`` and feeds its signatures: pixel arrays go to
``serving_default`` (float) or ``serving_uint8``, files and encoded bytes to
``serve_bytes``; the SavedModel resizes to its input size inside, so what is predicted
here is exactly what a TensorFlow server of the same export would answer.

A multi-label export also answers which classes are present: every class whose sigmoid
probability is above the threshold stored in its ``metadata.json``
(:attr:`Prediction.labels`, from the signatures' multi-hot ``class_ids``).

Thread safety: one Predictor may serve many threads, in every format. A loaded
SavedModel's concrete functions and an onnxruntime session may be called from several
threads at once. A LiteRT interpreter may not (its tensors are shared between calls), so
calls to a ``.tflite`` take turns on one interpreter, which runs each call with one
thread per core: with 8 threads calling at once on a shared 2-core AVX-512 Xeon this
served 1.2 to 2.2 times the images/s of an interpreter per thread (EfficientNet-Lite0 at
128 px, batch 1, float32 and float16 files).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recipes import export_format as fmt
from zoo.data.images import IMAGE_FORMATS
from zoo.errors import InvalidValueError, MissingFileError, ZooError

# What serve_bytes decodes (zoo.data.decode_image_bytes), as Pillow names the formats.
DECODABLE_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP")


@dataclass(frozen=True)
class Prediction:
    """The top-k classes of one image, most probable first.

    Attributes:
        class_names: ``k`` class names.
        probabilities: their probabilities (softmax, or sigmoid for multi-label).
        class_ids: their class ids.
        source: a file name when the image came from a file, else None.
        labels: multi-label exports: every class whose probability is above the
            export's threshold (not only among the top k), in class-id order; None for
            a single-label export.
    """

    class_names: tuple[str, ...]
    probabilities: tuple[float, ...]
    class_ids: tuple[int, ...]
    source: str | None = None
    labels: tuple[str, ...] | None = None

    @property
    def top(self) -> str:
        """The most probable class name."""
        return self.class_names[0]


class Predictor:
    """Loads an export once and predicts for numpy arrays, tensors, PIL images or files.

    Accepted inputs (one image or a batch):

    - numpy arrays, ``tf.Tensor``, ``tf.Variable`` or anything ``np.asarray`` takes:
      RGB pixels 0..255, ``(height, width, 3)`` or ``(batch, height, width, 3)``,
      uint8, any float dtype, or other integer dtypes with values in 0..255;
    - ``PIL.Image.Image`` (converted to RGB);
    - file paths (``str`` / ``os.PathLike``) and encoded bytes of JPEG, PNG, GIF, BMP or
      WebP (WebP decoded by Pillow, as in training);
    - a list or tuple of any of the above (sizes may differ).

    Every image is resized to the export's input size inside the SavedModel.

    Args:
        export_dir: a directory written by ``recipes.export.export_saved_model``.
        top_k: default number of classes per prediction.
        format: ``"saved_model"`` or a deployed format of the export
            (:data:`recipes.deploy.FORMATS`: ``tflite``, ``tflite-fp16``, ``tflite-int8``,
            ``onnx``), run with the LiteRT interpreter or onnxruntime; images are decoded
            and resized bilinearly to the input size here, as the SavedModel does inside.

    Raises:
        FileNotFoundError: ``export_dir`` is not a zoo export, or lacks the format's file.
        ValueError: ``top_k`` < 1.
        KeyError: an unknown format.
    """

    def __init__(
        self, export_dir: str | os.PathLike, top_k: int = 5, format: str = "saved_model"
    ) -> None:
        import tensorflow as tf

        from recipes.export import is_leftover

        directory = Path(export_dir)
        if is_leftover(directory):
            raise InvalidValueError(
                f"{directory} is the working directory of an export that was interrupted, "
                "not an export; predict with the export itself."
            )
        if not fmt.is_export(directory):
            raise MissingFileError(
                f"{directory} is not a zoo export (needs saved_model.pb and "
                f"assets/{fmt.MANIFEST_FILE}); write one with export_saved_model."
            )
        self.top_k = _check_top_k(top_k)
        self.export_dir = directory
        meta = json.loads((directory / "assets" / fmt.METADATA_FILE).read_text("utf-8"))
        self.metadata: dict[str, Any] = meta
        self.class_names: tuple[str, ...] = tuple(meta["class_names"])
        self.input_size: tuple[int, int] = tuple(meta["input_size"])
        multi_hot = fmt.outputs_of(meta) == fmt.MULTI_LABEL_OUTPUTS
        # The multi-label decision threshold; None for single-label exports.
        self.threshold: float | None = meta["threshold"] if multi_hot else None
        self._loaded = tf.saved_model.load(str(directory))
        self._signatures = {name: self._loaded.signatures[name] for name in fmt.SIGNATURES}
        self._deployed = None if format == "saved_model" else _deployed_runner(directory, format)
        # LiteRT interpreters serve one call at a time; the other runtimes are reentrant.
        litert = self._deployed is not None and not str(format).startswith("onnx")
        self._turns = threading.Lock() if litert else contextlib.nullcontext()

    def outputs(self, images: Any) -> dict[str, np.ndarray]:
        """The export's raw outputs for ``images`` (see :class:`Predictor` for inputs).

        Returns:
            ``{"logits": (batch, num_classes) float32, "probabilities": same,
            "class_id": (batch,) int64, "class_name": (batch,) str}``; batch is 1 for a
            single image; a ``.tflite`` format has no ``"logits"`` (the file returns
            probabilities only). A multi-label export gives ``"class_ids"`` int64 multi-hot and
            ``"class_names"`` str (``""`` where 0), both ``(batch, num_classes)``,
            instead of ``class_id`` and ``class_name``.

        Raises:
            ValueError: wrong rank, channel count, dtype or value range; an unknown
                file format; an empty batch.
            FileNotFoundError: a path that does not exist.
        """
        parts = [self._run(kind, batch) for kind, batch in _batches(images)]
        merged = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        for key in ("class_name", "class_names"):
            if key in merged:
                merged[key] = np.vectorize(lambda n: n.decode("utf-8"), otypes=[str])(merged[key])
        return merged

    def probabilities(self, images: Any) -> np.ndarray:
        """Class probabilities ``(batch, num_classes)`` float32."""
        return self.outputs(images)["probabilities"]

    def predict(self, images: Any, top_k: int | None = None) -> list[Prediction]:
        """Top-k predictions, one :class:`Prediction` per image (a list also for one).

        Raises:
            ValueError, FileNotFoundError: as :meth:`outputs`.
        """
        k = min(_check_top_k(self.top_k if top_k is None else top_k), len(self.class_names))
        outputs = self.outputs(images)
        probabilities = outputs["probabilities"]
        multi_hot = outputs.get("class_ids")
        sources = _sources(images, len(probabilities))
        predictions = []
        for index, (row, source) in enumerate(zip(probabilities, sources, strict=True)):
            ids = np.argsort(-row, kind="stable")[:k]
            labels = None
            if multi_hot is not None:
                labels = tuple(self.class_names[i] for i in np.flatnonzero(multi_hot[index]))
            predictions.append(
                Prediction(
                    tuple(self.class_names[i] for i in ids),
                    tuple(float(row[i]) for i in ids),
                    tuple(int(i) for i in ids),
                    source,
                    labels,
                )
            )
        return predictions

    __call__ = predict

    def manifest_hashes(self) -> dict[str, str]:
        """sha256 of every served variable, by manifest path (to show nothing moved)."""
        from zoo import fingerprint

        zoo_manifest = json.loads(
            (self.export_dir / "assets" / fmt.MANIFEST_FILE).read_text("utf-8")
        )
        paths = [e["path"] for e in zoo_manifest["manifest"]["variables"]]
        served = getattr(self._loaded, fmt.VARIABLE_COLLECTION)
        return {
            path: fingerprint.array_sha256(v.numpy()) for path, v in zip(paths, served, strict=True)
        }

    def _run(self, kind: str, batch: Any) -> dict[str, np.ndarray]:
        import tensorflow as tf

        if self._deployed is not None:
            return self._run_deployed(kind, batch)
        if kind == "bytes":
            out = self._signatures["serve_bytes"](image_bytes=tf.constant(batch, tf.string))
        elif kind == "uint8":
            out = self._signatures["serving_uint8"](images=batch)
        else:
            out = self._signatures["serving_default"](images=batch)
        return {key: value.numpy() for key, value in out.items()}

    def _run_deployed(self, kind: str, batch: Any) -> dict[str, np.ndarray]:
        """The deployed file's logits, with the outputs the SavedModel derives from them."""
        import tensorflow as tf

        if kind == "bytes":
            from zoo.data.images import decode_image_bytes

            batch = [tf.cast(decode_image_bytes(tf.constant(b)), tf.float32) for b in batch]
            batch = [tf.image.resize(image, self.input_size, fmt.RESIZE_METHOD) for image in batch]
        images = tf.cast(batch, tf.float32)
        if tuple(images.shape[1:3]) != self.input_size:
            images = tf.image.resize(images, self.input_size, fmt.RESIZE_METHOD)
        # A .tflite returns probabilities only (its one output, what MediaPipe reads); an
        # .onnx also returns logits (recipes.deploy_runtime).
        with self._turns:
            found = self._deployed(images.numpy())
        probabilities = found["probabilities"]
        ids = probabilities.argmax(axis=-1).astype(np.int64)
        names = np.array([self.class_names[i].encode("utf-8") for i in ids], dtype=object)
        out = {"logits": found["logits"]} if "logits" in found else {}
        return {**out, "probabilities": probabilities, "class_id": ids, "class_name": names}


def _deployed_runner(directory: Path, name: str) -> Any:
    from recipes import deploy

    (name,) = deploy.check_formats([name])
    return deploy.load_runner(directory / deploy.FORMATS[name].file)


def _check_top_k(top_k: Any) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise InvalidValueError(f"top_k must be a positive integer; got {top_k!r}.")
    return int(top_k)


def _is_single_file(images: Any) -> bool:
    return isinstance(images, (str, os.PathLike, bytes, bytearray))


def _is_pil(images: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # Pillow is a dependency, but a PIL image cannot exist without it
        return False
    return isinstance(images, Image.Image)


def _sources(images: Any, count: int) -> list[str | None]:
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    names = [str(i) if isinstance(i, (str, os.PathLike)) else None for i in items]
    return names if len(names) == count else [None] * count


def _batches(images: Any) -> list[tuple[str, Any]]:
    """Splits the input into ``(kind, batch)`` runs: kind "bytes", "uint8" or "float"."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise InvalidValueError("Got an empty list of images; pass at least one image.")
        if all(_is_single_file(i) for i in images):
            return [("bytes", [_read_encoded(i) for i in images])]
        return [run for i, item in enumerate(images) for run in _single_item(item, i)]
    return _single_item(images, None)


def _single_item(item: Any, index: int | None) -> list[tuple[str, Any]]:
    if _is_single_file(item):
        return [("bytes", [_read_encoded(item)])]
    if _is_pil(item):
        return [_pixels(np.asarray(item.convert("RGB")), index)]
    if isinstance(item, (list, tuple)):
        raise InvalidValueError(
            f"Nested lists are not images{_where(index)}; pass arrays (height, width, 3) "
            "or (batch, height, width, 3), PIL images or file paths."
        )
    return [_pixels(item, index)]


def _where(index: int | None) -> str:
    return "" if index is None else f" (item {index})"


def _read_encoded(item: Any) -> bytes:
    from PIL import Image, UnidentifiedImageError

    if isinstance(item, (bytes, bytearray)):
        data, name = bytes(item), "the given bytes"
    else:
        path = Path(item)
        if not path.is_file():
            raise MissingFileError(f"No image file at {path}.")
        data, name = path.read_bytes(), str(path)
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = image.format
    except Image.DecompressionBombError as error:
        raise InvalidValueError(
            f"{name} is refused as a decompression bomb: {error} Shrink the image, or, if "
            "you trust it, raise PIL.Image.MAX_IMAGE_PIXELS in Python before predicting."
        ) from error
    except (UnidentifiedImageError, OSError):
        kind = None
    if kind in DECODABLE_FORMATS:
        return data
    if kind in IMAGE_FORMATS:  # e.g. WebP: readable in training, not by serve_bytes
        return _as_png(data)
    raise InvalidValueError(
        f"{name} is not a {', '.join(sorted(IMAGE_FORMATS))} image (found "
        f"{kind or 'no image'}); convert it, or open it with Pillow and pass the PIL image."
    )


def _as_png(data: bytes) -> bytes:
    """Decodes as training does (Pillow, :func:`zoo.data.decode_rgb`), then re-encodes
    losslessly as PNG, which ``serve_bytes`` decodes to the very same pixels."""
    from PIL import Image

    from zoo.data.images import decode_rgb

    out = io.BytesIO()
    Image.fromarray(decode_rgb(io.BytesIO(data))).save(out, format="PNG")
    return out.getvalue()


def _pixels(item: Any, index: int | None) -> tuple[str, Any]:
    """Checks one array-like of pixels; returns ("uint8" | "float", a 4-D batch)."""
    import tensorflow as tf

    if isinstance(item, (tf.Tensor, tf.Variable)):
        dtype = item.dtype.as_numpy_dtype if item.dtype != tf.string else np.dtype(object)
        array = None
        shape = tuple(item.shape)
    else:
        array = np.asarray(item)
        dtype, shape = array.dtype, array.shape
    _check_shape(shape, index)
    value = item if array is None else array
    if len(shape) == 3:
        value = tf.expand_dims(value, 0)
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return "uint8", tf.convert_to_tensor(value, tf.uint8)
    if np.issubdtype(dtype, np.floating):
        tensor = tf.cast(tf.convert_to_tensor(value), tf.float32)
        _warn_if_unit_range(tensor)
        return "float", tensor
    if np.issubdtype(dtype, np.integer):
        tensor = tf.convert_to_tensor(value)
        low, high = int(tf.reduce_min(tensor)), int(tf.reduce_max(tensor))
        if low < 0 or high > 255:
            raise InvalidValueError(
                f"Integer pixels must lie in 0..255{_where(index)}; got {dtype.name} values "
                f"{low}..{high}. Rescale to 0..255 (uint8) first."
            )
        return "float", tf.cast(tensor, tf.float32)
    raise InvalidValueError(
        f"Pixels must be uint8, float or integer{_where(index)}; got dtype {dtype.name}. "
        "Pass RGB pixels 0..255."
    )


def _check_shape(shape: tuple[Any, ...], index: int | None) -> None:
    if len(shape) not in (3, 4):
        raise InvalidValueError(
            f"Expected an image (height, width, 3) or a batch (batch, height, width, 3)"
            f"{_where(index)}; got rank {len(shape)} shape {shape}."
        )
    if shape[-1] != 3:
        hint = {1: "greyscale: repeat it to 3 channels", 4: "RGBA: drop the alpha channel"}
        raise InvalidValueError(
            f"Expected 3 RGB channels last{_where(index)}; got shape {shape} "
            f"({hint.get(shape[-1], 'channels-first? move channels last')})."
        )
    if len(shape) == 4 and shape[0] == 0:
        raise InvalidValueError(f"Got an empty batch{_where(index)} of shape {shape}.")


def _warn_if_unit_range(tensor: Any) -> None:
    import tensorflow as tf

    if not tf.size(tensor):
        return
    low, high = float(tf.reduce_min(tensor)), float(tf.reduce_max(tensor))
    if low >= 0.0 and 0.0 < high <= 1.0:  # all zeros is a black image, not 0..1 pixels
        warnings.warn(
            "Float pixels all lie in 0..1; the export expects 0..255 (multiply by 255).",
            stacklevel=4,
        )


def format_predictions(predictions: list[Prediction], names: list[str]) -> str:
    """Text for ``zoo predict``: the image name, then one ``class  probability`` line each.

    A multi-label prediction adds a ``labels:`` line: the classes above the threshold.
    """
    lines = []
    for name, prediction in zip(names, predictions, strict=True):
        lines.append(name)
        if prediction.labels is not None:
            lines.append(f"  labels: {', '.join(prediction.labels) or '(none above threshold)'}")
        width = max(len(c) for c in prediction.class_names)
        lines += [
            f"  {c.ljust(width)}  {p:.4f}"
            for c, p in zip(prediction.class_names, prediction.probabilities, strict=True)
        ]
    return "\n".join(lines)


# Files decoded and predicted together by `zoo predict`.
CLI_BATCH = 32


def main_predict(
    export_dir: str, images: list[str], top_k: int = 5, format: str = "saved_model"
) -> int:
    """``zoo predict``: prints the top-k classes of each image file.

    Every good file is predicted; each bad one (missing, not an image, a decompression
    bomb, bytes the decoder refuses) gets one ``zoo: error:`` line on stderr naming it, and
    the others go on. Files are predicted in batches of :data:`CLI_BATCH`; a batch that
    fails to decode is retried file by file, so the bad file is the one named.

    Returns:
        0 when every file was predicted, 2 when any failed.

    Raises:
        FileNotFoundError: no export; ValueError: ``top_k`` < 1 (before any file is read).
    """
    import tensorflow as tf

    undecodable = tf.errors.InvalidArgumentError
    predictor = Predictor(export_dir, top_k=top_k, format=format)
    failed = 0
    for start in range(0, len(images), CLI_BATCH):
        chunk = list(images[start : start + CLI_BATCH])
        good = []  # (name, bytes); a file may be named twice
        for name in chunk:
            try:
                good.append((name, _read_encoded(name)))
            except ZooError as error:
                failed += _report_failure(error)
        try:
            found = predictor.predict([data for _, data in good]) if good else []
            done = [(name, p) for (name, _), p in zip(good, found, strict=True)]
        except undecodable:
            done = []
            for name, data in good:  # find the file the decoder refused
                try:
                    done.append((name, predictor.predict(data)[0]))
                except undecodable as error:
                    failed += _report_failure(_undecodable(name, error))
        for name, prediction in done:
            print(format_predictions([prediction], [name]))
    return 2 if failed else 0


def _report_failure(error: Exception) -> int:
    message = str(error.args[0]) if error.args else type(error).__name__
    print(f"zoo: error: {message.splitlines()[0]}", file=sys.stderr)
    return 1


def _undecodable(name: str, error: Exception) -> InvalidValueError:
    # TensorFlow's message: "Graph execution error:", where, then the decoder's own line.
    lines = [line.strip() for line in getattr(error, "message", str(error)).splitlines()]
    said = [line for line in lines if line and not line.startswith(("Graph", "Detected", "<", "["))]
    detail = said[0] if said else type(error).__name__
    return InvalidValueError(
        f"{name} cannot be decoded ({detail}); the file is truncated or corrupt: "
        "re-save or re-download it."
    )
