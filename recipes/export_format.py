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

Signatures (all return ``logits`` float32 ``(batch, num_classes)``, ``probabilities``
float32 (softmax, or sigmoid for multi-label), ``class_id`` int64 ``(batch,)`` (argmax of
the logits) and ``class_name`` string ``(batch,)``):

- ``serving_default``: ``images`` float32 ``(batch, height, width, 3)``, RGB pixels
  0..255; any batch size and image size (resized bilinearly to the model's input size).
- ``serving_uint8``: the same with ``images`` uint8. One SavedModel signature has one
  dtype per input, so uint8 pixels get their own signature.
- ``serve_bytes``: ``image_bytes`` string ``(batch,)`` of encoded JPEG, PNG, GIF or BMP
  files, decoded to RGB and resized inside.

The variables the signatures use are also registered as the SavedModel collection
``zoo_variables``, in manifest order, which is how the SavedModel's own variables map
back to manifest paths.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

EXPORT_FORMAT = "zoo.export/1"
SIGNATURES = ("serving_default", "serving_uint8", "serve_bytes")
OUTPUTS = ("logits", "probabilities", "class_id", "class_name")
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

TOLERANCE = 1e-5  # parity: max |export - Keras| of logits and probabilities, float32
PROBE_BATCH = 4
PROBE_SEED = 0


def is_export(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a zoo export (SavedModel plus zoo_manifest.json)."""
    path = Path(path)
    return (path / "saved_model.pb").is_file() and (path / "assets" / MANIFEST_FILE).is_file()


def probe_batch(input_size: tuple[int, int] | list[int], batch: int = PROBE_BATCH) -> np.ndarray:
    """The fixed probe: integer-valued float32 pixels ``(batch, height, width, 3)``.

    Integer values so the float32, uint8 and PNG paths see the same pixels.
    """
    rng = np.random.default_rng(PROBE_SEED)
    return rng.integers(0, 256, (batch, *input_size, 3)).astype(np.float32)
