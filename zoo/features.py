"""Multi-scale feature maps of a backbone at its block boundaries (timm's ``features_only``).

A backbone's **feature stages** are read off its registry blocks (:class:`zoo.registry.Block`):
for each reduction (stride relative to the input: 2, 4, 8, 16, 32) reached at a block
boundary, the last block that ends at that reduction. A typical CNN has five (strides 2 to
32), ConvNeXt, DenseNet, ResNet, NASNet and MobileNetV3-Small four (their first block ends
at stride 4), the Inception family three (8, 16, 32). The last stage ends at the backbone's
last layer, so its feature map is the backbone's own output.

``out_indices`` index these stages as in timm (``timm.models.features.FeatureInfo``):
``0`` is the finest stage, negative indices count from the coarsest (``-1``), so
``(-4, -3, -2, -1)`` asks for the four coarsest maps of any backbone that has four or more
stages (strides 4 to 32 on most of them).

:func:`features_model` wires a new ``keras.Model`` over the backbone's own layers, so it
shares their weights (pretrained or fine-tuned) and takes the same preprocessed input
(``zoo.Preprocess``). Reductions are nominal strides: the product of the ``strides`` of every
layer on the way, which the feature map's size follows exactly when the input grows by a
multiple of the stride (valid padding rounds the first size down, as in Keras' Inception).
Backend-neutral Keras 3.

Source: timm ``features_only`` / ``feature_info`` (Wightman, pytorch-image-models,
``timm/models/_features.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import keras

from zoo.errors import InvalidTypeError, InvalidValueError
from zoo.registry import BackboneSpec

__all__ = ["FeatureInfo", "feature_stages", "features_model", "select_stages", "tensor_strides"]


@dataclass(frozen=True)
class FeatureInfo:
    """One feature stage of a backbone (one output of a ``features_only`` model).

    Attributes:
        index: the stage's position among all the backbone's stages (what ``out_indices``
            names), 0 the finest.
        block: the registry block whose end is the stage (``zoo info NAME`` lists blocks).
        layer: the backbone layer whose output is the feature map.
        channels: channels of the feature map.
        reduction: stride relative to the input, in pixels (2, 4, 8, 16, 32).
    """

    index: int
    block: str
    layer: str
    channels: int
    reduction: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the fields."""
        return asdict(self)


def _graph(model: Any) -> Any:
    """The functional graph of ``model`` (a built Sequential keeps one as ``_functional``)."""
    return getattr(model, "_functional", None) or model


def _strides_of(layer: Any) -> tuple[int, int]:
    strides = getattr(layer, "strides", None)
    if strides is None:
        return (1, 1)
    strides = tuple(strides) if isinstance(strides, Sequence) else (int(strides),)
    if len(strides) == 1:
        return (int(strides[0]), int(strides[0]))
    return (int(strides[0]), int(strides[1]))


def tensor_strides(
    model: keras.Model, start: tuple[int, int] = (1, 1)
) -> dict[int, tuple[int, int]]:
    """The nominal stride of every tensor in ``model``'s graph, keyed by ``id(tensor)``.

    Walks the graph from the inputs: a layer's output stride is the largest of its inputs'
    strides times the layer's own ``strides`` (convolutions, pooling; 1 for any other
    layer). Nested functional and sequential models are walked the same way.

    Args:
        model: a functional (or built sequential) ``keras.Model``.
        start: the stride of its inputs, ``(height, width)``.

    Returns:
        ``id(keras_tensor) -> (stride_height, stride_width)`` for the inputs and every
        node's outputs.
    """
    graph = _graph(model)
    strides = {id(t): start for t in graph.inputs}
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            inputs = [strides[id(t)] for t in node.input_tensors if id(t) in strides]
            here = (max(s[0] for s in inputs), max(s[1] for s in inputs)) if inputs else start
            op = node.operation
            if isinstance(op, keras.Model) and hasattr(_graph(op), "_nodes_by_depth"):
                inner = tensor_strides(op, here)
                outs = [inner[id(t)] for t in _graph(op).outputs]
            else:
                factor = _strides_of(op)
                outs = [(here[0] * factor[0], here[1] * factor[1])] * len(node.output_tensors)
            for tensor, stride in zip(node.output_tensors, outs, strict=True):
                strides[id(tensor)] = stride
    return strides


def feature_stages(backbone: keras.Model, spec: BackboneSpec) -> tuple[FeatureInfo, ...]:
    """Every feature stage of a built backbone, finest first (see the module docstring).

    Args:
        backbone: the model ``zoo.create_backbone(spec.name, ...)`` built (no top).
        spec: its registry spec.

    Returns:
        One :class:`FeatureInfo` per distinct reduction reached at a block boundary: the
        last block ending there. The last stage ends at the backbone's last block.

    Raises:
        InvalidValueError: a block's end layer is not in ``backbone`` (a model with the
            ImageNet top, or another architecture).
    """
    names = {layer.name for layer in backbone.layers}
    missing = [b.end for b in spec.blocks if b.end not in names]
    if missing:
        raise InvalidValueError(
            f"The model is not {spec.name!r} without its top: block end layers {missing[:3]} "
            "are missing. Build it with zoo.create_backbone(name, include_top=False)."
        )
    strides = tensor_strides(backbone)
    last: dict[int, FeatureInfo] = {}
    for block in spec.blocks:
        output = backbone.get_layer(block.end).output
        reduction = strides[id(output)][0]
        last[reduction] = FeatureInfo(0, block.name, block.end, int(output.shape[-1]), reduction)
    ordered = sorted(last.values(), key=lambda f: f.reduction)
    return tuple(
        FeatureInfo(i, f.block, f.layer, f.channels, f.reduction) for i, f in enumerate(ordered)
    )


def select_stages(
    stages: Sequence[FeatureInfo], out_indices: Sequence[int] | None, name: str = "the backbone"
) -> tuple[FeatureInfo, ...]:
    """The stages ``out_indices`` names, finest first (timm's indexing, negatives allowed).

    Args:
        stages: every stage (:func:`feature_stages`).
        out_indices: stage positions, e.g. ``(1, 2, 3, 4)`` or ``(-2, -1)``; ``None`` for all.
        name: the backbone's name, for error messages.

    Returns:
        The chosen stages in network order (finest first), whatever order they were given in.

    Raises:
        InvalidTypeError: ``out_indices`` is not a sequence of ints.
        InvalidValueError: empty, out of range (the message gives the valid range and each
            stage's reduction), or the same stage named twice (e.g. ``1`` and ``-4`` of five).
    """
    n = len(stages)
    listing = ", ".join(f"{s.index}: stride {s.reduction} ({s.block})" for s in stages)
    if out_indices is None:
        return tuple(stages)
    if isinstance(out_indices, int | str) or not isinstance(out_indices, Sequence):
        raise InvalidTypeError(
            f"out_indices must be a sequence of ints such as (1, 2, 3, 4); got {out_indices!r}."
        )
    bad = [i for i in out_indices if isinstance(i, bool) or not isinstance(i, int)]
    if bad:
        raise InvalidTypeError(f"out_indices must be ints; got {bad} in {tuple(out_indices)}.")
    if not out_indices:
        raise InvalidValueError(f"out_indices is empty; pick stages of {name} from: {listing}.")
    outside = [i for i in out_indices if not -n <= i < n]
    if outside:
        raise InvalidValueError(
            f"out_indices {tuple(out_indices)}: {outside} out of range; {name} has {n} feature "
            f"stages, so valid indices are 0..{n - 1} or -{n}..-1 ({listing})."
        )
    positions = [i % n for i in out_indices]
    if len(set(positions)) != len(positions):
        raise InvalidValueError(
            f"out_indices {tuple(out_indices)} names a stage twice (as {sorted(positions)} of "
            f"0..{n - 1}); list each stage of {name} once."
        )
    return tuple(stages[i] for i in sorted(positions))


def features_model(
    backbone: keras.Model, spec: BackboneSpec, out_indices: Sequence[int] | None = None
) -> keras.Model:
    """A model with the backbone's feature maps at the chosen stages as its outputs.

    The model reuses ``backbone``'s layers (same weights, nothing copied) and takes the same
    input: preprocessed images ``(batch, height, width, 3)`` (``zoo.Preprocess``).

    Args:
        backbone: the model ``zoo.create_backbone(spec.name, ...)`` built (no top).
        spec: its registry spec.
        out_indices: stage positions (:func:`select_stages`); ``None`` for every stage.

    Returns:
        A ``keras.Model`` with one output per chosen stage, finest first, each
        ``(batch, ceil(height / reduction), ceil(width / reduction), channels)`` for
        "same" padding (valid padding rounds down further). ``model.feature_info`` is the
        tuple of :class:`FeatureInfo` of its outputs, in order; ``model.zoo_weights`` is the
        backbone's (where the weights came from).

    Raises:
        InvalidValueError, InvalidTypeError: bad ``out_indices`` (see :func:`select_stages`)
            or a backbone that does not fit ``spec``.
    """
    chosen = select_stages(feature_stages(backbone, spec), out_indices, repr(spec.name))
    outputs = [backbone.get_layer(stage.layer).output for stage in chosen]
    model = keras.Model(backbone.inputs, outputs, name=f"{backbone.name}_features")
    model.feature_info = chosen
    model.zoo_weights = getattr(backbone, "zoo_weights", {"source": None, "sha256": None})
    return model
