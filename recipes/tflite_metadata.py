"""TFLite Model Metadata in zoo's ``.tflite`` files, written with MediaPipe's own writers.

MediaPipe Tasks (``ImageClassifier`` on Android, iOS, the web and Python, all one C++
core) loads a ``.tflite`` image classifier only with TFLite Model Metadata: how to
normalize the input image, and the class names of the score tensor. :func:`write` adds
it with the writers Model Maker uses (``mediapipe.tasks.python.metadata.metadata_writers``,
the ``image_classifier`` writer's three steps plus the model's name, version, author and
licences); the flatbuffers are built by the writer and the schema classes the wheel ships.
What a zoo ``.tflite`` carries:

- general: name, description, version, author ``zoo``, licences (the pretrained
  weights' licence from the registry, and the recipe's ``[export] license`` for the
  fine-tuned model);
- input ``image``: RGB, normalization mean 0 and std 1, i.e. the pixels 0..255 go in
  unchanged, as the file's input contract says (float32 files; the int8 file takes
  uint8 pixels, which MediaPipe feeds as they are);
- output ``probabilities``: the class probabilities (softmax, or an independent sigmoid
  per class for multi-label), with the class names as its ``labels.txt``
  (``TENSOR_AXIS_LABELS``, one per line in class-id order), packed into the file as
  MediaPipe's associated files are (a zip archive after the flatbuffer).

:func:`read` returns what a file carries and :func:`problems` checks it against an
export's class names (``zoo verify``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recipes.export_format import temperature_of
from zoo.errors import ZooError

LABELS_MEMBER = "labels.txt"
AUTHOR = "zoo"
NORM_MEAN = (0.0,)  # pixels 0..255 in, unchanged: (x - 0) / 1
NORM_STD = (1.0,)


@dataclass(frozen=True)
class ModelInfo:
    """What :func:`write` puts into a ``.tflite``'s metadata.

    Attributes:
        name: the model's name (the recipe's name).
        description: one sentence on what it classifies.
        version: the model's version (zoo's version and the export's weights digest).
        licenses: the licences, e.g. ``"weights: Apache-2.0; model: CC-BY-4.0"``.
        class_names: the classes in class-id order.
        multi_label: sigmoid per class (True) or softmax over the classes (False).
        temperature: the softmax's calibration temperature, ``softmax(logits / T)``
            (1.0: as trained; temperature scaling, Guo et al. 2017).
    """

    name: str
    description: str
    version: str
    licenses: str
    class_names: tuple[str, ...]
    multi_label: bool = False
    temperature: float = 1.0


def model_info(meta: dict[str, Any], zoo_manifest: dict[str, Any] | None = None) -> ModelInfo:
    """The ``.tflite`` metadata content for an export with this ``metadata.json``.

    Name: the recipe's name (else ``<backbone> classifier``); version: zoo's version and
    the first 12 hex digits of the weights manifest's digest; licences: the pretrained
    weights' (the registry's ``license`` of the backbone) and the recipe's
    ``[export] license`` for the fine-tuned model.

    Returns:
        A :class:`ModelInfo`.
    """
    recipe = meta.get("recipe") or {}
    backbone = meta.get("backbone") or "custom"
    names = tuple(meta["class_names"])
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    digest = ((zoo_manifest or {}).get("manifest") or {}).get("digest", "")
    version = f"zoo {(meta.get('versions') or {}).get('zoo', '?')}"
    version += f", weights {digest[:12]}" if digest else ""
    return ModelInfo(
        name=recipe.get("name") or f"{backbone} classifier",
        description=(
            f"{backbone} fine-tuned with zoo to classify {len(names)} classes ({shown}); "
            f"RGB input {meta['input_size'][0]}x{meta['input_size'][1]}."
        ),
        version=version,
        licenses=licenses(meta),
        class_names=names,
        multi_label=bool(meta.get("multi_label")),
        temperature=temperature_of(meta),
    )


def pretrained_source(meta: dict[str, Any]) -> str | None:
    """The name of the export's pretrained weights (``"imagenet"``), or None for none.

    From ``metadata.json``'s pretrained origin (``"pretrained": {"weights": ...}``), else
    the file name of ``pretrained_weights`` (a name, or ``{"source", "sha256"}``).
    """
    origin = meta.get("pretrained")
    if isinstance(origin, dict) and "weights" in origin:
        weights = origin["weights"]
    else:
        weights = meta.get("pretrained_weights")
        if isinstance(weights, dict):
            weights = Path(weights["source"]).name if weights.get("source") else None
    return None if not weights or weights == "none" else str(weights)


def licenses(meta: dict[str, Any]) -> str:
    """``"pretrained weights: ...; fine-tuned model: ..."`` for an export's metadata."""
    import zoo

    backbone, weights = meta.get("backbone"), pretrained_source(meta)
    if weights is None:
        pretrained = "none (trained from random initialization)"
    elif backbone in zoo.list_backbones():
        pretrained = f"{zoo.get_spec(backbone).license} ({backbone}, {weights})"
    else:
        pretrained = "not known to zoo's registry"
    own = ((meta.get("recipe") or {}).get("export") or {}).get("license")
    model = own or "not stated (set [export] license in the recipe)"
    return f"pretrained weights: {pretrained}; fine-tuned model: {model}"


class MediaPipeMissingError(ZooError, ImportError):
    """The ``mediapipe`` package, which writes and reads the metadata, is not installed."""


def _writers() -> Any:
    from recipes import mediapipe_stub

    try:
        import mediapipe  # noqa: F401
    except ImportError:
        raise MediaPipeMissingError(
            "The .tflite formats need mediapipe for their metadata (what MediaPipe Tasks "
            "reads): pip install 'zoo[deploy]'."
        ) from None
    mediapipe_stub.install()
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_info, metadata_writer

    return metadata_writer, metadata_info


def write(data: bytes, info: ModelInfo) -> bytes:
    """The ``.tflite`` bytes ``data`` with TFLite Model Metadata (see the module doc).

    Args:
        data: a converted ``.tflite`` with one image input ``(batch, height, width, 3)``
            (float32 pixels 0..255 or uint8) and one probabilities output
            ``(batch, num_classes)`` (float32 or uint8), without metadata.
        info: the metadata's content.

    Returns:
        The file's bytes with the metadata and ``labels.txt`` packed in.
    """
    metadata_writer, metadata_info = _writers()
    activation = "sigmoid per class" if info.multi_label else "softmax over the classes"
    if info.temperature != 1.0:
        activation += f", calibrated: softmax(logits / {info.temperature:.4g})"

    class Writer(metadata_writer.MetadataWriter):
        def __del__(self) -> None:
            # The base's __del__ removes its temporary folder, and fails with a traceback
            # when it runs at interpreter exit; write() removes the folder itself.
            pass

    writer = Writer.create(bytearray(data))
    # add_general_info takes a name and a description only; version, author and
    # licences are fields of the same GeneralMd it builds.
    writer._general_md = metadata_info.GeneralMd(
        name=info.name,
        version=info.version,
        description=info.description,
        author=AUTHOR,
        licenses=info.licenses,
    )
    writer.add_image_input(
        list(NORM_MEAN),
        list(NORM_STD),
        description="RGB pixels 0..255 at the model's input size (resize before).",
    )
    writer.add_classification_output(
        metadata_writer.Labels().add(list(info.class_names)),
        name="probabilities",
        description=f"Class probabilities ({activation}), in the order of labels.txt.",
    )
    try:
        content, _ = writer.populate()
    finally:
        writer._temp_folder.cleanup()
    return bytes(content)


def read(data: bytes | str | Path) -> dict[str, Any] | None:
    """The metadata of a ``.tflite``, or None when it has none.

    Args:
        data: the file's bytes or path.

    Returns:
        ``{"name", "description", "version", "author", "license", "input_type",
        "output_type", "normalization": {"mean": [...], "std": [...]} or None,
        "labels": [class names] or None, "min_parser_version"}``; types are numpy
        dtype names (``"float32"``, ``"uint8"``).
    """
    if not isinstance(data, bytes):
        data = Path(data).read_bytes()
    _writers()
    from mediapipe.tasks.metadata import metadata_schema_py_generated as schema
    from mediapipe.tasks.python.metadata import metadata
    from mediapipe.tasks.python.metadata.metadata_writers import writer_utils

    buffer = metadata.get_metadata_buffer(bytearray(data))
    if not buffer:
        return None
    md = schema.ModelMetadataT.InitFromObj(schema.ModelMetadata.GetRootAsModelMetadata(buffer, 0))
    (subgraph,) = md.subgraphMetadata
    normalization = None
    for tensor in subgraph.inputTensorMetadata or []:
        for unit in tensor.processUnits or []:
            if unit.optionsType == schema.ProcessUnitOptions.NormalizationOptions:
                normalization = {
                    "mean": [float(v) for v in unit.options.mean],
                    "std": [float(v) for v in unit.options.std],
                }
    labels = None
    packed = metadata.MetadataDisplayer.with_model_buffer(bytearray(data))
    for tensor in subgraph.outputTensorMetadata or []:
        for file in tensor.associatedFiles or []:
            if file.type == schema.AssociatedFileType.TENSOR_AXIS_LABELS:
                name = file.name.decode("utf-8")
                text = bytes(packed.get_associated_file_buffer(name)).decode("utf-8")
                labels = text.splitlines()
    return {
        "name": _text(md.name),
        "description": _text(md.description),
        "version": _text(md.version),
        "author": _text(md.author),
        "license": _text(md.license),
        "input_type": _dtype(writer_utils.get_input_tensor_types(bytearray(data))[0]),
        "output_type": _dtype(writer_utils.get_output_tensor_types(bytearray(data))[0]),
        "normalization": normalization,
        "labels": labels,
        "min_parser_version": _text(md.minParserVersion),
    }


def _text(value: bytes | str | None) -> str | None:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _dtype(tensor_type: int) -> str:
    from mediapipe.tasks.metadata import schema_py_generated as tflite

    names = {v: k.lower() for k, v in vars(tflite.TensorType).items() if not k.startswith("_")}
    return names.get(tensor_type, str(tensor_type))


def problems(data: bytes | str | Path, class_names: list[str] | tuple[str, ...]) -> list[str]:
    """What is wrong with a ``.tflite``'s metadata for MediaPipe Tasks and this export.

    Checks that there is metadata; that its labels equal ``class_names`` (in order);
    that the input is float32 with normalization mean 0 and std 1 on every channel (the
    pixels 0..255 pass unchanged, as the file expects) or uint8 (normalization, if any,
    also mean 0 and std 1); and that the output is float32 or uint8, the score types
    MediaPipe reads.

    Args:
        data: the file's bytes or path.
        class_names: the export's class names (``metadata.json``).

    Returns:
        One line per problem; empty when the metadata is right.
    """
    found = read(data)
    if found is None:
        return ["has no TFLite Model Metadata (MediaPipe Tasks cannot load it)"]
    lines = []
    labels = found["labels"]
    if labels is None:
        lines.append("its metadata has no labels file for the output")
    elif list(labels) != list(class_names):
        changed = [
            f"{i}: {a!r} != {b!r}"
            for i, (a, b) in enumerate(zip(labels, class_names, strict=False))
            if a != b
        ]
        lines.append(
            f"labels in its metadata differ from the export's ({len(labels)} vs "
            f"{len(class_names)} names; {'; '.join(changed[:3]) or 'different count'})"
        )
    norm = found["normalization"]
    identity = norm is not None and set(norm["mean"]) == {0.0} and set(norm["std"]) == {1.0}
    if found["input_type"] == "float32" and not identity:
        lines.append(
            f"float32 input needs normalization mean 0 / std 1 (pixels 0..255 in); "
            f"its metadata has {json.dumps(norm)}"
        )
    elif found["input_type"] == "uint8" and norm is not None and not identity:
        lines.append(f"uint8 input with normalization {json.dumps(norm)}; expected none or 0 / 1")
    elif found["input_type"] not in ("float32", "uint8"):
        lines.append(f"input type {found['input_type']}; MediaPipe takes float32 or uint8")
    if found["output_type"] not in ("float32", "uint8"):
        lines.append(f"output type {found['output_type']}; MediaPipe reads float32 or uint8")
    return lines
