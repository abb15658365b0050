"""A stand-in for the one native module MediaPipe's metadata writers import and its wheels lack.

``mediapipe.tasks.python.metadata.metadata`` (which every writer under
``mediapipe.tasks.python.metadata.metadata_writers`` imports) imports
``mediapipe.tasks.cc.metadata.python._pywrap_metadata_version`` for one function,
``GetMinimumMetadataParserVersion(metadata_buffer) -> str``: the oldest metadata parser
that can read a TFLite Model Metadata buffer, which the populator stores in the
metadata's ``min_parser_version`` field. The ``mediapipe`` wheels on PyPI (1.2.x) ship the
Python writers but not that compiled module, so importing a writer fails with
``ModuleNotFoundError: No module named 'mediapipe.tasks.cc'``.

:func:`install` registers :func:`minimum_parser_version` under that module name when the
real module cannot be imported (and never shadows it when it can). The stand-in knows
the version rules of the metadata schema (``metadata_schema.fbs``, the same table as the
C++ ``metadata_version.cc``) only for what zoo writes: metadata that uses no field added
after schema version 1.0.0 needs parser 1.0.0. A buffer using any later field (subgraph
process units, tensor groups, custom metadata, vocabulary or ScaNN files, versioned
associated files, tokenizers, audio) raises instead of being given a wrong version.

It reads the buffer with the flatbuffer classes the wheel ships
(``mediapipe.tasks.metadata.metadata_schema_py_generated``); it encodes nothing.
``tests/recipes/test_mediapipe.py`` fails once a mediapipe release ships the native
module again, so this stand-in can then be deleted.
"""

from __future__ import annotations

import importlib
import sys
import types

NATIVE_MODULE = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"
BASE_VERSION = "1.0.0"  # metadata_schema.fbs: the parser version of the first schema


def minimum_parser_version(metadata_buffer: bytes) -> str:
    """The oldest metadata parser that reads ``metadata_buffer`` (TFLite Model Metadata).

    Args:
        metadata_buffer: a ``ModelMetadata`` flatbuffer (file identifier ``M001``).

    Returns:
        ``"1.0.0"``: the buffer uses only fields of schema 1.0.0.

    Raises:
        NotImplementedError: the buffer uses a field added after 1.0.0 (named), whose
            parser version this stand-in does not compute.
    """
    from mediapipe.tasks.metadata import metadata_schema_py_generated as schema

    metadata = schema.ModelMetadata.GetRootAsModelMetadata(bytearray(metadata_buffer), 0)
    later = []
    files = [metadata.AssociatedFiles(i) for i in range(metadata.AssociatedFilesLength())]
    for g in range(metadata.SubgraphMetadataLength()):
        subgraph = metadata.SubgraphMetadata(g)
        for field in (
            "InputProcessUnits",
            "OutputProcessUnits",
            "InputTensorGroups",
            "OutputTensorGroups",
            "CustomMetadata",
        ):
            if getattr(subgraph, f"{field}Length")():
                later.append(f"SubGraphMetadata.{field}")
        files += [subgraph.AssociatedFiles(i) for i in range(subgraph.AssociatedFilesLength())]
        tensors = [
            subgraph.InputTensorMetadata(i) for i in range(subgraph.InputTensorMetadataLength())
        ]
        tensors += [
            subgraph.OutputTensorMetadata(i) for i in range(subgraph.OutputTensorMetadataLength())
        ]
        for tensor in tensors:
            files += [tensor.AssociatedFiles(i) for i in range(tensor.AssociatedFilesLength())]
            if tensor.Content() is not None and tensor.Content().ContentPropertiesType() not in (
                schema.ContentProperties.NONE,
                schema.ContentProperties.FeatureProperties,
                schema.ContentProperties.ImageProperties,
                schema.ContentProperties.BoundingBoxProperties,
            ):
                later.append("TensorMetadata.content (a later ContentProperties)")
            for u in range(tensor.ProcessUnitsLength()):
                if tensor.ProcessUnits(u).OptionsType() not in (
                    schema.ProcessUnitOptions.NormalizationOptions,
                    schema.ProcessUnitOptions.ScoreCalibrationOptions,
                    schema.ProcessUnitOptions.ScoreThresholdingOptions,
                ):
                    later.append("TensorMetadata.process_units (a tokenizer)")
    for file in files:
        if file.Type() not in (
            schema.AssociatedFileType.UNKNOWN,
            schema.AssociatedFileType.DESCRIPTIONS,
            schema.AssociatedFileType.TENSOR_AXIS_LABELS,
            schema.AssociatedFileType.TENSOR_VALUE_LABELS,
            schema.AssociatedFileType.TENSOR_AXIS_SCORE_CALIBRATION,
        ):
            later.append("AssociatedFile.type (vocabulary or ScaNN index)")
        if file.Version() is not None:
            later.append("AssociatedFile.version")
    if later:
        raise NotImplementedError(
            f"The metadata uses {', '.join(sorted(set(later)))}, added after schema "
            f"{BASE_VERSION}; this stand-in for {NATIVE_MODULE} only versions 1.0.0 metadata."
        )
    return BASE_VERSION


def install() -> bool:
    """Makes ``mediapipe.tasks.python.metadata`` importable; True if the stand-in was needed.

    Registers a module named :data:`NATIVE_MODULE` (and its missing parent packages)
    whose ``GetMinimumMetadataParserVersion`` is :func:`minimum_parser_version`, unless
    the real module imports.
    """
    if NATIVE_MODULE in sys.modules:
        return getattr(sys.modules[NATIVE_MODULE], "ZOO_STAND_IN", False)
    try:
        importlib.import_module(NATIVE_MODULE)
        return False
    except ModuleNotFoundError:
        pass
    parts = NATIVE_MODULE.split(".")
    for depth in range(3, len(parts)):  # mediapipe.tasks.cc, .metadata, .python
        name = ".".join(parts[:depth])
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = []  # a namespace with nothing on disk
            sys.modules[name] = package
    module = types.ModuleType(NATIVE_MODULE, minimum_parser_version.__doc__)
    module.GetMinimumMetadataParserVersion = minimum_parser_version
    module.ZOO_STAND_IN = True
    sys.modules[NATIVE_MODULE] = module
    return True
