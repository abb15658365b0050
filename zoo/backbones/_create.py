"""``create_backbone``: a registered backbone as a keras.Model, with strict weight loading."""

from __future__ import annotations

import collections
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from zoo import weights as weights_lib
from zoo.registry import BackboneSpec, get_spec


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
    spec: BackboneSpec, input_shape: tuple[int, int, int] | None = None, include_top: bool = False
) -> Any:
    """The architecture of ``spec`` with random weights and stable layer names."""
    if input_shape is None:
        input_shape = (*spec.input_size, 3)
    with fresh_layer_names():
        return spec.builder(include_top=include_top, input_shape=tuple(input_shape))


def create_backbone(
    name: str,
    weights: str | os.PathLike | None = "imagenet",
    input_shape: tuple[int, int, int] | None = None,
    include_top: bool = False,
) -> Any:
    """Builds a registered backbone, optionally with pretrained weights.

    Args:
        name: registry name, e.g. ``"inception_v3"`` (see ``zoo.list_backbones()``).
        weights: ``"imagenet"`` (resolved from the cache, hash-checked; see
            :mod:`zoo.weights`), ``None`` for random weights, or a path to a Keras
            weights file (loaded strictly, without a hash check).
        input_shape: ``(height, width, 3)``; default the spec's input size.
        include_top: keep the 1000-class ImageNet classifier (default input size only).

    Returns:
        A keras.Model taking preprocessed images ``(batch, height, width, 3)`` (see
        ``zoo.Preprocess``) to feature maps ``(batch, h', w', feature_dim)`` without
        pooling; with ``include_top``, to ``(batch, 1000)`` ImageNet scores. Layers keep
        Keras' names. ``model.zoo_weights`` records where the weights came from and their
        sha256.

    Raises:
        KeyError: unknown backbone name (with close matches).
        WeightsUnavailableError: ImageNet weights are not cached and cannot be fetched.
        WeightsHashMismatchError: a cached file is not the official one.
        WeightsMismatchError: the weights file does not fit the architecture.
    """
    spec = get_spec(name)
    model = build_architecture(spec, input_shape, include_top)
    if weights is None:
        model.zoo_weights = {"source": None, "sha256": None}
        return model
    path = weights_lib.resolve(spec, include_top) if weights == "imagenet" else weights
    weights_lib.load_weights_strict(model, path)
    model.zoo_weights = {"source": str(path), "sha256": weights_lib.file_hash(path)}
    return model
