"""BatchNorm folded into the convolution before it, for forward passes in inference mode.

In inference a ``BatchNormalization`` is a per-channel affine map,
``y = (x - mean) * s + beta`` with ``s = gamma / sqrt(variance + epsilon)``. When it
directly follows a ``Conv2D`` or ``DepthwiseConv2D`` that has no activation of its own and
feeds nothing else, it folds into that convolution: ``kernel' = kernel * s`` (per output
channel) and ``bias' = (bias - mean) * s + beta`` (Jacob et al., 2018, "Quantization and
Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference", section 3.2;
what TensorFlow Lite's converter does). The folded model computes the same function to
float rounding (about 1e-6 relative in float32), and the convolution, its bias and the
activation after it run as one fused op instead of a convolution and two or more
elementwise passes over the activations.

:func:`fold_batchnorm` returns a folded copy of a model for forward passes that run in
inference mode anyway: one of the candidates :mod:`zoo.caching.engine` probes for the
cache's passes, a run's evaluation and embeddings (not under a ``tf.distribute`` strategy,
where the copy's variables would be mirrored). It is not always faster: on the AVX2 CPU
it made EfficientNet-B0 slower, so the probe keeps the unfolded model wherever that wins. The original model, its weights and its graph are left untouched:
training, the export and the frozen-weights proof use the original. Backend-neutral Keras
and numpy.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from zoo.caching.plan import all_layers

# Exact types: a subclass may override ``call``.
_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


@keras.saving.register_keras_serializable(package="zoo")
class FoldedBatchNorm(keras.layers.Layer):
    """Stands where a folded BatchNormalization was: passes its input through unchanged.

    Takes (and ignores) the ``training`` and ``mask`` arguments the BatchNormalization's
    call was recorded with. Input and output shape ``(batch, ..., channels)``.
    """

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        return inputs

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


def _producer(layer: Any) -> Any:
    """The layer whose output is ``layer``'s (single) input."""
    return layer._inbound_nodes[0].input_tensors[0]._keras_history.operation


def foldable_pairs(model: keras.Model) -> list[tuple[Any, Any]]:
    """``(convolution, batchnorm)`` pairs in ``model`` (nested models included) that fold.

    A pair folds when the BatchNormalization (exact type, channels-last axis) is called
    once, on the output of a ``Conv2D`` or ``DepthwiseConv2D`` (exact types,
    channels-last) that is called once, has a linear activation and feeds only it.
    """
    pairs = []
    for layer in all_layers(model):
        if type(layer) is not keras.layers.BatchNormalization or len(layer._inbound_nodes) != 1:
            continue
        rank = len(layer.input.shape)
        if layer.axis not in (-1, rank - 1):
            continue
        conv = _producer(layer)
        if (
            type(conv) in _CONVOLUTIONS
            and conv.data_format == "channels_last"
            and conv.activation is keras.activations.linear
            and len(conv._inbound_nodes) == 1
            and len(conv._outbound_nodes) == 1
        ):
            pairs.append((conv, layer))
    return pairs


def folded_weights(conv: Any, bn: Any) -> tuple[np.ndarray, np.ndarray]:
    """The kernel and bias of ``conv`` with ``bn`` (in inference mode) folded in.

    Computed in float64, returned in the kernel's dtype: kernel of ``conv.kernel``'s shape,
    ``(kh, kw, in, out)`` or depthwise ``(kh, kw, in, multiplier)``; bias ``(channels,)``.
    """
    mean = np.asarray(bn.moving_mean, np.float64)
    scale = 1.0 / np.sqrt(np.asarray(bn.moving_variance, np.float64) + bn.epsilon)
    if bn.scale:
        scale = scale * np.asarray(bn.gamma, np.float64)
    beta = np.asarray(bn.beta, np.float64) if bn.center else 0.0
    kernel = np.asarray(conv.kernel, np.float64)
    if type(conv) is keras.layers.DepthwiseConv2D:
        # Output channel i * multiplier + m comes from kernel[..., i, m].
        folded = kernel * scale.reshape(kernel.shape[2], kernel.shape[3])
    else:
        folded = kernel * scale
    bias = np.asarray(conv.bias, np.float64) if conv.use_bias else 0.0
    dtype = np.dtype(keras.backend.standardize_dtype(conv.kernel.dtype))
    return folded.astype(dtype), ((bias - mean) * scale + beta).astype(dtype)


def fold_batchnorm(model: keras.Model) -> tuple[keras.Model, int]:
    """A copy of ``model`` for inference with every foldable BatchNorm folded.

    The copy has its own layers and weights (the original gains no graph nodes), and
    computes ``model(x, training=False)`` to float rounding. Call it only in inference
    mode: a folded BatchNorm no longer updates or uses batch statistics.

    Args:
        model: a functional ``keras.Model`` (nested functional models are copied too), or
            any model with ``predict_on_batch``.

    Returns:
        ``(folded_model, number_of_batchnorms_folded)``; with none foldable (a subclassed
        model has no recorded graph to fold in), ``(model, 0)``: the model itself.
    """
    pairs = foldable_pairs(model)
    if not pairs:
        return model, 0
    convs = {id(conv): bn for conv, bn in pairs}
    folded_bns = {id(bn) for _, bn in pairs}
    copies: list[tuple[Any, Any]] = []

    def clone(layer: Any) -> Any:
        if id(layer) in folded_bns:
            return FoldedBatchNorm(name=layer.name)
        config = layer.get_config()
        if id(layer) in convs:
            config["use_bias"] = True
        new = type(layer).from_config(config)
        copies.append((layer, new))
        return new

    folded = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for old, new in copies:
        if id(old) in convs:
            new.set_weights(list(folded_weights(old, convs[id(old)])))
        else:
            new.set_weights(old.get_weights())
    return folded, len(pairs)
