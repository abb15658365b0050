"""Forward cost of a Keras model in multiply-accumulates (MACs).

Counts the multiply-accumulates of the layers that dominate a convolutional network's
cost, the convention of the published "FLOPs"/"MACs" figures (fvcore, ptflops, the
EfficientNet and ConvNeXt papers): convolutions and fully connected layers. Bias
additions, normalisation, activations, pooling and element-wise ops are not counted.

Counted per image (batch size 1), with ``k`` the kernel's spatial size:

* ``Conv1D/2D/3D`` (grouped too): ``output positions * prod(k) * in_channels / groups
  * filters``.
* ``DepthwiseConv1D/2D``: ``output positions * prod(k) * in_channels * depth_multiplier``.
* ``SeparableConv1D/2D``: the depthwise part plus the pointwise
  ``output positions * in_channels * depth_multiplier * filters``.
* ``Conv1DTranspose/2D/3D``: ``input positions * prod(k) * in_channels * filters``.
* ``Dense``: ``leading positions * in_features * units`` (a Dense applied to
  ``(batch, h, w, c)`` runs once per position).
* Nested models (a backbone inside a classifier) are counted layer by layer.

Layers are counted once per call, so a layer shared by two branches counts twice.
"""

from __future__ import annotations

import math
from typing import Any

import keras

from zoo.errors import InvalidValueError

_L = keras.layers
_CONV = (_L.Conv1D, _L.Conv2D, _L.Conv3D)
_DEPTHWISE = (_L.DepthwiseConv1D, _L.DepthwiseConv2D)
_SEPARABLE = (_L.SeparableConv1D, _L.SeparableConv2D)
_TRANSPOSE = (_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose)
_COUNTED = (*_CONV, *_DEPTHWISE, *_SEPARABLE, *_TRANSPOSE, _L.Dense)


def count_macs(model: Any) -> int:
    """Multiply-accumulates of one forward pass of ``model`` for a single image.

    Args:
        model: a built functional or Sequential ``keras.Model`` whose input shape is fully
            known apart from the batch dimension, e.g. ``(batch, 224, 224, 3)``.

    Returns:
        The number of multiply-accumulates per image (divide by 1e9 for GMACs).

    Raises:
        ValueError: the model has no graph of layers (a subclassed model) or a counted
            layer's input or output shape is not fully known; build the model with a
            fixed ``input_shape`` such as ``(224, 224, 3)``.
    """
    nodes_by_depth = _graph_nodes(model)
    total = 0
    for depth in nodes_by_depth:
        for node in nodes_by_depth[depth]:
            total += _node_macs(node)
    return total


def _graph_nodes(model: Any) -> dict[int, list[Any]]:
    graph = getattr(model, "_functional", None) or model  # Sequential keeps a Functional
    nodes = getattr(graph, "_nodes_by_depth", None)
    if nodes is None:
        raise InvalidValueError(
            f"count_macs needs a functional or Sequential model with a layer graph; got "
            f"{type(model).__name__} {getattr(model, 'name', '')!r}, which has none (a "
            f"subclassed model or an unbuilt Sequential). Build it with an Input of fixed "
            f"shape, e.g. keras.Input((224, 224, 3))."
        )
    return nodes


def _node_macs(node: Any) -> int:
    layer = node.operation
    if isinstance(layer, keras.Model):
        return count_macs(layer)
    if not isinstance(layer, _COUNTED):
        return 0
    in_shape = _known_shape(layer, node.arguments.keras_tensors[0].shape, "input")
    out_shape = _known_shape(layer, node.outputs[0].shape, "output")
    if isinstance(layer, _L.Dense):
        return math.prod(out_shape[1:-1]) * math.prod(layer.kernel.shape)
    channels_first = getattr(layer, "data_format", "channels_last") == "channels_first"
    out_positions = math.prod(out_shape[2:] if channels_first else out_shape[1:-1])
    if isinstance(layer, _SEPARABLE):
        return out_positions * (
            math.prod(layer.depthwise_kernel.shape) + math.prod(layer.pointwise_kernel.shape)
        )
    if isinstance(layer, _TRANSPOSE):
        in_positions = math.prod(in_shape[2:] if channels_first else in_shape[1:-1])
        return in_positions * math.prod(layer.kernel.shape)
    # Conv kernels are (*k, in / groups, filters); depthwise ones (*k, in, multiplier).
    return out_positions * math.prod(layer.kernel.shape)


def _known_shape(layer: Any, shape: tuple, which: str) -> tuple[int, ...]:
    if any(d is None for d in shape[1:]):
        raise InvalidValueError(
            f"count_macs needs fully known shapes, but layer {layer.name!r} has {which} "
            f"shape {tuple(shape)}. Build the model with a fixed input_shape, e.g. "
            f"(224, 224, 3)."
        )
    return tuple(shape)
