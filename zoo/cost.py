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
* ``EinsumDense`` (the projections of Keras' ``MultiHeadAttention``): the kernel's size
  times the output positions the kernel does not span.
* Nested models (a backbone inside a classifier) are counted layer by layer.
* Layers that hold counted layers inside them (a transformer layer with its attention
  projections and MLP, as KerasHub builds them) are traced symbolically once, and the
  counted layers called inside are counted as above. The attention's own products
  (``Q K^T`` and the weighted sum of the values) are not counted, like the other
  element-wise work: a vision transformer's figure is its projections and MLPs.

Layers are counted once per call, so a layer shared by two branches counts twice.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import keras

from zoo.errors import InvalidValueError

_L = keras.layers
_CONV = (_L.Conv1D, _L.Conv2D, _L.Conv3D)
_DEPTHWISE = (_L.DepthwiseConv1D, _L.DepthwiseConv2D)
_SEPARABLE = (_L.SeparableConv1D, _L.SeparableConv2D)
_TRANSPOSE = (_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose)
_COUNTED = (*_CONV, *_DEPTHWISE, *_SEPARABLE, *_TRANSPOSE, _L.Dense, _L.EinsumDense)


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
        return _nested_macs(node) if _has_counted_sublayers(layer) else 0
    return _layer_macs(layer, node.arguments.keras_tensors[0].shape, node.outputs[0].shape)


def _has_counted_sublayers(layer: Any) -> bool:
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is None:
        return False
    return any(isinstance(sub, _COUNTED) for sub in flatten(include_self=False))


@contextmanager
def _recording_calls(calls: list[tuple[Any, tuple, tuple]]) -> Iterator[None]:
    """Records ``(layer, input shape, output shape)`` of every counted layer's ``call``."""
    classes = {cls for cls in _COUNTED}
    saved = {cls: cls.__dict__.get("call") for cls in classes}

    def wrap(original: Any) -> Any:
        def call(self: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            outputs = original(self, inputs, *args, **kwargs)
            calls.append((self, tuple(inputs.shape), tuple(outputs.shape)))
            return outputs

        return call

    try:
        for cls in classes:
            cls.call = wrap(cls.call)
        yield
    finally:
        for cls, original in saved.items():
            if original is None:
                del cls.call
            else:
                cls.call = original


def _nested_macs(node: Any) -> int:
    """MACs of the counted layers called inside ``node``'s layer, traced symbolically."""
    from keras.src import backend

    layer = node.operation
    calls: list[tuple[Any, tuple, tuple]] = []
    with _recording_calls(calls):
        backend.compute_output_spec(layer.call, *node.arguments.args, **node.arguments.kwargs)
    return sum(_layer_macs(sub, in_shape, out_shape) for sub, in_shape, out_shape in calls)


def _layer_macs(layer: Any, in_shape: tuple, out_shape: tuple) -> int:
    if not isinstance(layer, (_L.Dense, _L.EinsumDense)):  # those need the output only
        in_shape = _known_shape(layer, in_shape, "input")
    out_shape = _known_shape(layer, out_shape, "output")
    if isinstance(layer, _L.EinsumDense):
        return _einsum_dense_macs(layer, out_shape)
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


def _einsum_dense_macs(layer: Any, out_shape: tuple[int, ...]) -> int:
    """Kernel size times the output positions the kernel's axes do not span."""
    operands, output = layer.equation.replace(" ", "").split("->")
    kernel_axes = set(operands.split(",")[1])
    positions = math.prod(
        size
        for axis, size in zip(output[1:], out_shape[1:], strict=True)
        if axis not in kernel_axes
    )
    return positions * math.prod(layer.kernel.shape)


def _known_shape(layer: Any, shape: tuple, which: str) -> tuple[int, ...]:
    if any(d is None for d in shape[1:]):
        raise InvalidValueError(
            f"count_macs needs fully known shapes, but layer {layer.name!r} has {which} "
            f"shape {tuple(shape)}. Build the model with a fixed input_shape, e.g. "
            f"(224, 224, 3)."
        )
    return tuple(shape)
