"""The export's format: layout, file names, signatures, outputs and the probe batch.

One home for what :mod:`recipes.export` writes and :mod:`recipes.verify` and
:mod:`recipes.predict` read, so neither side imports the other for a constant. An
export directory holds::

    saved_model.pb, variables/        the SavedModel (preprocessing baked in)
    assets/labels.txt                 one class name per line, in class-id order
    assets/zoo_manifest.json          weight manifest, frozen set, pretrained source
    assets/metadata.json              backbone, input size, preprocessing, versions,
                                      recipe, and the pretrained origin (``"pretrained"``)
    model.keras                       the same model as a Keras file
    model*.tflite, model.onnx, labels.txt   deployed files (recipes.deploy), optional,
                                      each hashed in zoo_manifest.json under "deployed"
    MODEL_CARD.md                     the model card (recipes.model_card)

Signatures (all return ``logits`` float32 ``(batch, num_classes)``, ``probabilities``
float32 (``softmax(logits / temperature)``, or sigmoid for multi-label), ``class_id`` int64
``(batch,)`` (argmax of the logits) and ``class_name`` string ``(batch,)``; a multi-label
export returns :data:`MULTI_LABEL_OUTPUTS` instead, see below):

- ``serving_default``: ``images`` float32 ``(batch, height, width, 3)``, RGB pixels
  0..255; any batch size and image size (resized bilinearly to the model's input size).
- ``serving_uint8``: the same with ``images`` uint8. One SavedModel signature has one
  dtype per input, so uint8 pixels get their own signature.
- ``serve_bytes``: ``image_bytes`` string ``(batch,)`` of encoded JPEG, PNG, GIF or BMP
  files, decoded to RGB and resized inside.

Multi-label exports (``metadata.json``: ``"multi_label": true`` and a ``"threshold"``, a
probability in (0, 1), default :data:`DEFAULT_THRESHOLD`) return ``logits``,
``probabilities`` = sigmoid(logits), ``class_ids`` int64 ``(batch, num_classes)``: 1 where
the probability is strictly above the threshold, else 0 (multi-hot, in the column order
of ``labels.txt``), and ``class_names`` string ``(batch, num_classes)``: the class name
where ``class_ids`` is 1, ``""`` elsewhere (no class name is empty). Dense, fixed-shape
tensors because a SavedModel signature cannot return a ragged tensor and TF Serving's
REST and gRPC answers are dense; a client zips ``probabilities``, ``class_ids`` and
``class_names`` column by column, or drops the ``""``. A joined string (``"cat,dog"``)
would need parsing and breaks on class names with commas. Multi-label exports written
before the threshold existed have no ``"threshold"`` and keep the single-label outputs.

Calibration: ``metadata.json``'s ``"temperature"`` (a positive number, 1.0 when the run was
not calibrated; exports written before it existed have none and mean 1.0) divides the logits
before the softmax, in every signature and every deployed file (temperature scaling, Guo et
al. 2017, "On Calibration of Modern Neural Networks"). The logits are the model's own and the
argmax does not change; only the probabilities are the calibrated ones.

The variables the signatures use are also registered as the SavedModel collection
``zoo_variables``, in manifest order, which is how the SavedModel's own variables map
back to manifest paths.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import UnknownNameError

EXPORT_FORMAT = "zoo.export/1"
SIGNATURES = ("serving_default", "serving_uint8", "serve_bytes")
OUTPUTS = ("logits", "probabilities", "class_id", "class_name")
MULTI_LABEL_OUTPUTS = ("logits", "probabilities", "class_ids", "class_names")
DEFAULT_THRESHOLD = 0.5  # multi-label: a class is predicted when its probability is above
TEMPERATURE_KEY = "temperature"  # metadata.json: probabilities = softmax(logits / temperature)
VARIABLE_COLLECTION = "zoo_variables"
LABELS_FILE = "labels.txt"
MANIFEST_FILE = "zoo_manifest.json"
METADATA_FILE = "metadata.json"
KERAS_FILE = "model.keras"
RESIZE_METHOD = "bilinear"
# metadata.json key for zoo.proof.PretrainedOrigin: where the frozen weights' anchor is.
PRETRAINED_KEY = "pretrained"
# zoo_manifest.json key: deployed file name -> {"format", "sha256", "bytes"} (recipes.deploy).
DEPLOYED_KEY = "deployed"
# A LoRA export: the adapters and base kernels its merged kernels were made of
# (recipes.export), listed with their sha256 under this key of zoo_manifest.json.
LORA_KEY = "lora"
LORA_FILE = "lora_adapters.npz"

TOLERANCE = 1e-5  # parity: max |export - Keras| of logits and probabilities, float32
PROBE_BATCH = 4
PROBE_SEED = 0


def is_export(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a zoo export (SavedModel plus zoo_manifest.json)."""
    path = Path(path)
    return (path / "saved_model.pb").is_file() and (path / "assets" / MANIFEST_FILE).is_file()


def outputs_of(metadata: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The signatures' output names for an export with this ``metadata.json``.

    :data:`MULTI_LABEL_OUTPUTS` for a multi-label export with a threshold, else
    :data:`OUTPUTS` (single-label, and multi-label exports from before the threshold).
    """
    metadata = metadata or {}
    if metadata.get("multi_label") and metadata.get("threshold") is not None:
        return MULTI_LABEL_OUTPUTS
    return OUTPUTS


def temperature_of(metadata: Mapping[str, Any] | None) -> float:
    """The export's calibration temperature (1.0 when ``metadata.json`` records none)."""
    value = (metadata or {}).get(TEMPERATURE_KEY)
    return 1.0 if value is None else float(value)


NOT_A_TEMPERATURE = "not a positive number"
MULTI_LABEL_TEMPERATURE = "not 1 on a multi-label (sigmoid) model"


def temperature_problem(value: Any, multi_label: bool) -> str | None:
    """What is wrong with a ``metadata.json`` temperature, or None when it is usable.

    Returns:
        :data:`NOT_A_TEMPERATURE` (not a number in (0, 1e6); booleans refused), or
        :data:`MULTI_LABEL_TEMPERATURE` (a multi-label model's sigmoid takes none), or None.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e6:
        return NOT_A_TEMPERATURE
    if multi_label and value != 1:
        return MULTI_LABEL_TEMPERATURE
    return None


def probabilities(logits: np.ndarray, multi_label: bool, temperature: float = 1.0) -> np.ndarray:
    """What an export's ``probabilities`` output holds for these logits.

    Args:
        logits: ``(batch, num_classes)``.
        multi_label: sigmoid per class (the temperature must then be 1.0) instead of a
            softmax over the classes.
        temperature: the softmax's temperature ``T``: ``softmax(logits / T)``.

    Returns:
        float32 ``(batch, num_classes)``, computed in float64 without overflow.
    """
    z = np.asarray(logits, np.float64)
    if multi_label:
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
    z = z / temperature
    shifted = np.exp(z - z.max(-1, keepdims=True))
    return (shifted / shifted.sum(-1, keepdims=True)).astype(np.float32)


def probe_batch(input_size: tuple[int, int] | list[int], batch: int = PROBE_BATCH) -> np.ndarray:
    """The fixed probe: integer-valued float32 pixels ``(batch, height, width, 3)``.

    Integer values so the float32, uint8 and PNG paths see the same pixels.
    """
    rng = np.random.default_rng(PROBE_SEED)
    return rng.integers(0, 256, (batch, *input_size, 3)).astype(np.float32)


# -- deployed formats (recipes.deploy) ------------------------------------------------------

SAVED_MODEL = "saved_model"
MODEL_CARD_FILE = "MODEL_CARD.md"
# The two outputs of a deployed file that has logits (ONNX); a .tflite has only the second.
LOGITS, PROBABILITIES = "logits", "probabilities"


@dataclass(frozen=True)
class DeployFormat:
    """One deployment format.

    Attributes:
        name: the name users pass (``--format``, ``[export] formats``).
        file: the file written next to the SavedModel.
        precision: ``"float32"``, ``"float16"`` or ``"int8"``.
        runtime: ``"litert"`` or ``"onnxruntime"``.
        tolerance: max |output difference| to the Keras model per unit of logit scale
            (``recipes.deploy.parity_bound``); None for int8 (top-1 agreement instead).
        outputs: the file's output tensors, in order: a ``.tflite`` has one,
            ``probabilities`` (softmax, or sigmoid for multi-label: what MediaPipe Tasks
            reads as scores); an ``.onnx`` has ``logits`` and ``probabilities``.
    """

    name: str
    file: str
    precision: str
    runtime: str
    tolerance: float | None
    outputs: tuple[str, ...] = (PROBABILITIES,)


FORMATS: dict[str, DeployFormat] = {
    f.name: f
    for f in (
        DeployFormat("tflite", "model.tflite", "float32", "litert", 1e-4),
        DeployFormat("tflite-fp16", "model_fp16.tflite", "float16", "litert", 1e-2),
        DeployFormat("tflite-int8", "model_int8.tflite", "int8", "litert", None),
        DeployFormat("onnx", "model.onnx", "float32", "onnxruntime", 1e-4, (LOGITS, PROBABILITIES)),
    )
}


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
