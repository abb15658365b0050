"""Where a classifier can be cut for activation caching, and the model surgery to cut it.

A fine-tuning stage that leaves the bottom of the backbone frozen (BatchNorm in inference
mode, no augmentation, nothing stochastic active there) recomputes a fixed function of the
input every epoch under plain ``fit``. :func:`plan_cut` finds the highest block boundary
(named by the backbone's :class:`zoo.registry.BackboneSpec`) below which that holds, and
:func:`split_model` splits a classifier (``preprocess`` -> ``backbone`` -> ``head``, see
``zoo.classifier``) there into

* a frozen **prefix** (``preprocess`` and the backbone's layers up to the cut), run once in
  inference mode over the data (:mod:`zoo.caching.compute`); and
* a trainable **suffix** (the rest of the backbone and the head): a functional sub-graph
  that reuses the full model's layers, so training it trains the full model.

The cut at the backbone's last layer is the classic head-only "bottleneck" cache (TF1's
``retrain.py``); a cut lower down caches the frozen prefix of a top-blocks fine-tune.
Backend-neutral Keras 3: no TensorFlow here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from zoo.errors import ZooError

# Layers that draw random numbers in training mode, and the attribute that switches them off.
_STOCHASTIC_ATTRS = ("rate", "stddev")

# Layer classes whose output does not depend on ``training`` once the static checks of
# :func:`plan_cut` hold (BatchNorm non-trainable, stochastic layers at strength 0). Exact
# types only: a subclass may override ``call``. Any other layer below the cut is probed.
_MODE_FREE_LAYERS = tuple(
    getattr(keras.layers, name)
    for name in (
        "InputLayer", "Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "SeparableConv2D",
        "Conv2DTranspose", "Dense", "EinsumDense", "Activation", "ReLU", "ELU", "LeakyReLU",
        "PReLU", "Softmax", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum",
        "Concatenate", "ZeroPadding2D", "Cropping2D", "MaxPooling2D", "AveragePooling2D",
        "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Reshape", "Flatten", "Permute",
        "Identity", "Rescaling", "Normalization", "BatchNormalization", "LayerNormalization",
        "Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout",
    )
    if hasattr(keras.layers, name)
)  # fmt: skip


@dataclass
class CutPlan:
    """A valid split of a classifier at a block boundary.

    Attributes:
        block: name of the block whose end is the cut.
        layer: name of the backbone layer whose output is cached.
        prefix_layers: the backbone layers at or below the cut (plus outer layers before
            the backbone), all frozen.
        is_backbone_output: the cut is the backbone's output (head-only cache).
    """

    block: str
    layer: str
    prefix_layers: list[Any] = field(repr=False)
    is_backbone_output: bool = False


class CacheUnavailable(ZooError):
    """Caching is not valid for this model or stage; the message is the reason.

    Fine-tuning catches it and trains the plain way, recording the reason.
    """


def backbone_blocks(model: keras.Model) -> tuple[Any, ...]:
    """The :class:`zoo.registry.Block` s of ``model``'s backbone, bottom to top.

    Looks the backbone up through ``zoo.classifier.classifier_info``; a bare model with a
    ``zoo_blocks`` attribute (a sequence of Blocks) works too.

    Raises:
        CacheUnavailable: the blocks cannot be found.
    """
    blocks = getattr(model, "zoo_blocks", None)
    if blocks:
        return tuple(blocks)
    try:
        from zoo.classifier import classifier_info
        from zoo.registry import get_spec

        return get_spec(classifier_info(model)["backbone"]).blocks
    except ZooError as err:  # not a zoo classifier, or a backbone no longer registered
        raise CacheUnavailable(
            f"the backbone's blocks are unknown ({type(err).__name__}: {err}); build the model "
            "with zoo.build_classifier"
        ) from None


def backbone_layer(model: keras.Model) -> keras.Model:
    """The classifier's ``backbone`` layer.

    Raises:
        CacheUnavailable: the model has none.
    """
    try:
        return model.get_layer("backbone")
    except ValueError:
        raise CacheUnavailable("the model has no layer named 'backbone'") from None


def _outer_backbone_node(model: keras.Model, backbone: keras.Model) -> Any:
    """The node where ``model``'s own graph calls ``backbone`` (not its internal one)."""
    own = {id(t) for t in backbone.outputs}
    nodes = [n for n in backbone._inbound_nodes if not {id(t) for t in n.output_tensors} <= own]
    if len(nodes) != 1:
        raise CacheUnavailable(
            f"the backbone is called {len(nodes)} times in the model; expected exactly once"
        )
    return nodes[0]


def _stochastic(layer: Any) -> bool:
    """Whether ``layer`` draws random numbers in training mode with a non-zero strength."""
    if not hasattr(layer, "seed_generator"):
        return False
    strengths = [getattr(layer, a) for a in _STOCHASTIC_ATTRS if hasattr(layer, a)]
    # A random layer without a known strength attribute counts as active.
    return not strengths or any(float(s or 0.0) > 0 for s in strengths)


def _is_batchnorm(layer: Any) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


def plan_cut(model: keras.Model, blocks: Sequence[Any] | None = None) -> CutPlan:
    """Finds the highest block boundary below which caching is valid.

    Valid means: every variable of the outer layers before the backbone and of the
    backbone layers up to the block's end is frozen (not in ``model.trainable_variables``),
    every BatchNorm there is non-trainable (so Keras runs it in inference mode), and no
    stochastic layer (Dropout, GaussianNoise, ...) there is active. Blocks with
    ``cut=False`` are skipped.

    Args:
        model: a classifier with layers ``backbone`` and ``head``.
        blocks: the backbone's blocks; default :func:`backbone_blocks`.

    Returns:
        The :class:`CutPlan`.

    Raises:
        CacheUnavailable: no block boundary is valid; the message says why the lowest
            candidate failed.
    """
    backbone = backbone_layer(model)
    blocks = tuple(blocks) if blocks is not None else backbone_blocks(model)
    layers = backbone.layers
    index = {layer.name: i for i, layer in enumerate(layers)}
    missing = [b.end for b in blocks if b.end not in index]
    if missing:
        raise CacheUnavailable(f"block end layers not in the backbone: {missing}")
    outer = model.layers[: model.layers.index(backbone)]
    trainable = {id(v) for v in model.trainable_variables}
    reason = "no block boundary can be cut"
    for block in reversed(blocks):
        if not block.cut:
            continue
        prefix = [*outer, *layers[: index[block.end] + 1]]
        reason = _prefix_problem(prefix, trainable, block.name)
        if reason is None:
            return CutPlan(
                block=block.name,
                layer=block.end,
                prefix_layers=prefix,
                is_backbone_output=index[block.end] == len(layers) - 1,
            )
    raise CacheUnavailable(reason)


def _prefix_problem(prefix: Sequence[Any], trainable: set[int], block: str) -> str | None:
    """Why the layers of ``prefix`` cannot be cached, or None if they can."""
    train_vars = [v.path for layer in prefix for v in layer.variables if id(v) in trainable]
    if train_vars:
        return (
            f"trainable variables below the cut at block {block!r}: "
            f"{', '.join(train_vars[:3])}{' ...' if len(train_vars) > 3 else ''}"
        )
    bn = [layer.name for layer in prefix if _is_batchnorm(layer) and layer.trainable]
    if bn:
        return f"BatchNorm in training mode below the cut at block {block!r}: {bn[:3]}"
    noisy = [layer.name for layer in prefix if _stochastic(layer)]
    if noisy:
        return f"stochastic layers active below the cut at block {block!r}: {noisy[:3]}"
    return None


@contextmanager
def frozen_layers_in_inference(model: keras.Model) -> Iterator[list[str]]:
    """Switches off stochastic layers (Dropout, stochastic depth, noise) that are frozen.

    Keras runs a non-trainable BatchNorm in inference mode but leaves a non-trainable
    Dropout active under ``fit``. Inside this context a non-trainable stochastic layer has
    its ``rate`` / ``stddev`` set to 0 (restored on exit), so a frozen block behaves as in
    inference, as the Keras transfer-learning guide's ``base(x, training=False)`` does.
    Changes take effect at the next compile.

    Yields:
        The names of the layers switched off.
    """
    saved: list[tuple[Any, str, Any]] = []
    try:
        for layer in all_layers(model):
            if layer.trainable or not _stochastic(layer):
                continue
            for attr in _STOCHASTIC_ATTRS:
                if hasattr(layer, attr):
                    saved.append((layer, attr, getattr(layer, attr)))
                    setattr(layer, attr, 0.0)
        yield [layer.name for layer, _, _ in saved]
    finally:
        for layer, attr, value in saved:
            setattr(layer, attr, value)


def all_layers(model: Any) -> Iterator[Any]:
    """Every layer nested in ``model`` (depth first), not ``model`` itself."""
    for layer in getattr(model, "layers", []):
        yield layer
        if hasattr(layer, "layers"):
            yield from all_layers(layer)


@dataclass
class SplitModel:
    """The two halves of a classifier split at a cut; both share the full model's layers.

    Attributes:
        prefix: ``(batch, h, w, 3)`` pixels -> ``(batch, h', w', c)`` activations at the cut.
        suffix: activations at the cut -> logits, sharing variables with the full model.
    """

    prefix: keras.Model
    suffix: keras.Model


def split_model(model: keras.Model, plan: CutPlan) -> SplitModel:
    """Builds the prefix and suffix models of ``model`` at ``plan``'s cut.

    Raises:
        CacheUnavailable: the graph cannot be split there (a later layer reads a tensor
            from below the cut).
    """
    backbone = backbone_layer(model)
    node = _outer_backbone_node(model, backbone)
    outer_in = node.input_tensors[0]
    outer_out = node.output_tensors[0]
    cut_tensor = backbone.get_layer(plan.layer).output
    try:
        before = keras.Model(model.inputs, outer_in, name="zoo_before_backbone")
        bottom = keras.Model(backbone.inputs, cut_tensor, name="zoo_backbone_bottom")
        after = keras.Model(outer_out, model.outputs[0], name="zoo_after_backbone")
        top = None
        if not plan.is_backbone_output:
            top = keras.Model(cut_tensor, backbone.outputs[0], name="zoo_backbone_top")
    except ValueError as err:
        raise CacheUnavailable(f"the graph cannot be split at {plan.layer!r}: {err}") from None
    pixels = keras.Input(model.inputs[0].shape[1:], dtype=model.inputs[0].dtype)
    prefix = keras.Model(pixels, bottom(before(pixels)), name="zoo_prefix")
    feats = keras.Input(cut_tensor.shape[1:], name="cached_activations")
    out = after(top(feats) if top is not None else feats)
    suffix = keras.Model(feats, out, name="zoo_suffix")
    # The suffix must own exactly the full model's trainable variables, the same objects.
    want = {id(v) for v in model.trainable_variables}
    got = {id(v) for v in suffix.trainable_variables}
    if want != got:
        raise CacheUnavailable(
            f"the suffix at {plan.layer!r} does not share the model's trainable variables "
            f"({len(got & want)} of {len(want)} shared)"
        )
    return SplitModel(prefix=prefix, suffix=suffix)


def middle_model(model: keras.Model, lower: CutPlan, upper: CutPlan) -> keras.Model:
    """The backbone's layers between two cuts: activations at ``lower`` -> at ``upper``.

    Running it on the activations at ``lower`` gives those at ``upper`` without running
    the layers below ``lower`` again (a cache at ``upper`` derived from one at ``lower``).

    Raises:
        CacheUnavailable: ``lower`` is not below ``upper``, or the graph cannot be split
            there (a layer above ``lower`` reads a tensor from below it).
    """
    if len(lower.prefix_layers) >= len(upper.prefix_layers):
        raise CacheUnavailable(f"the cut at {lower.layer!r} is not below {upper.layer!r}")
    backbone = backbone_layer(model)
    try:
        return keras.Model(
            backbone.get_layer(lower.layer).output,
            backbone.get_layer(upper.layer).output,
            name="zoo_backbone_middle",
        )
    except ValueError as err:
        raise CacheUnavailable(
            f"the graph cannot be split between {lower.layer!r} and {upper.layer!r}: {err}"
        ) from None


def layers_to_probe(plan: CutPlan) -> list[str]:
    """Names of the prefix layers whose training-mode behaviour zoo cannot vouch for.

    Keras' own stateless and convolution layers, frozen BatchNorm and switched-off
    stochastic layers compute the same in both modes (:func:`plan_cut` checked the last
    two); zoo's :class:`~zoo.preprocessing.Preprocess` too. Anything else (a custom layer
    that reads ``training``) must pass :func:`probe_prefix` before the prefix is cached.
    """
    from zoo.preprocessing import Preprocess

    known = (*_MODE_FREE_LAYERS, Preprocess)
    return [layer.name for layer in plan.prefix_layers if type(layer) not in known]


def probe_prefix(prefix: keras.Model, images: np.ndarray) -> str | None:
    """Checks that the prefix is the same function in training and inference mode.

    Runs the prefix on ``images`` with ``training=True`` twice and ``training=False`` once;
    any difference means a layer below the cut depends on the mode (training runs it only
    for the layers :func:`layers_to_probe` names). Seed-generator states are restored
    afterwards so the probe leaves no trace.

    Returns:
        None when all three agree bitwise, else the reason.
    """
    states = [(v, np.array(v)) for v in prefix.variables if "seed_generator" in v.path]
    try:
        a = np.asarray(prefix(images, training=True))
        b = np.asarray(prefix(images, training=True))
        c = np.asarray(prefix(images, training=False))
    finally:
        for v, value in states:
            v.assign(value)
    if not (np.array_equal(a, b) and np.array_equal(a, c)):
        return (
            "the prefix differs between training and inference mode (a stochastic or "
            "batch-statistics layer is active below the cut)"
        )
    return None


def apply_policy(model: keras.Model, policy: Any) -> None:
    """Applies ``policy`` to ``model`` made fully trainable first, whatever the last one left.

    Changing ``trainable`` takes effect at the next compile.
    """
    for layer in [model, *all_layers(model)]:
        layer.trainable = True
    policy.apply(model)


@contextmanager
def stochastic_frozen_layers_off(model: keras.Model, enabled: bool = True) -> Iterator[list[str]]:
    """:func:`frozen_layers_in_inference` when ``enabled``, else a context that does nothing.

    Yields:
        The names of the layers switched off (none when not ``enabled``).
    """
    if not enabled:
        yield []
        return
    with frozen_layers_in_inference(model) as off:
        yield off
