"""Every backbone ``keras.applications`` ships, as keyword rows: one table, one row a model.

Source: ``keras.applications`` (https://github.com/keras-team/keras/tree/master/keras/src/
applications): the architectures, built with random weights and no pooling, and the
ImageNet weight files Keras publishes, with their hashes (md5 where Keras publishes only
md5; none for MobileNet V1/V2, whose sha256 zoo records on first use, see
:mod:`zoo.weights`). zoo loads the weights itself.

What a family shares (paper, licence, preprocessing, where its files live, where its blocks
end) is stated once, in its :class:`_Family` row of ``_FAMILIES``; what differs per model
(size, params, GMACs, top-1, hashes) once, in its :class:`_Model` row of ``_MODELS``. Params are Keras' ``count_params`` without
and with the classifier; GMACs are ``zoo.cost.count_macs`` of the model without the
classifier at its default input size (``tests/zoo/test_backbones.py`` checks both against
the built models); top-1 is what the Keras docs table reports for the weights.

Blocks, the cut points policies unfreeze by: each family's ``_*_blocks`` function says
where its blocks end and why those ends are (or are not, ``cut=False``) single-tensor cuts.
Some end layers are auto-named by Keras (``add_3``, ``activation_17``, ...); they are
stable because zoo builds in a fresh naming scope (``zoo.builder.fresh_layer_names``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras

from zoo.registry import (
    CAFFE,
    INCEPTION,
    RAW,
    TORCH,
    BackboneSpec,
    Block,
    Preprocessing,
    WeightSource,
    register_backbone,
)

_KERAS_SOURCE = "https://github.com/keras-team/keras/blob/master/keras/src/applications/"
_STORAGE = "https://storage.googleapis.com/tensorflow/keras-applications/"
_HASH_ALGORITHMS = {32: "md5", 64: "sha256"}
_KERAS_WEIGHTS = "Apache-2.0 (Keras applications weights)"


# -- where each family's blocks end -------------------------------------------------------


def _convnext_blocks(name: str, depths: tuple[int, ...]) -> tuple[Block, ...]:
    """One block per ConvNeXt block, ``stage_{i}_block_{j}``, ending at its ``_identity``.

    The residual sum is a plain ``+`` (an operation, not a layer), so the next layer still
    reads the block's input: not a single-tensor cut. The downsampling layers between
    stages (LayerNorm + 2x2 stride-2 conv) are blocks and clean cuts. The last block also
    holds the final LayerNorm (auto-named ``layer_normalization``).
    """
    blocks = []
    for stage, depth in enumerate(depths):
        if stage:
            down = f"downsampling_block_{stage - 1}"
            blocks.append(Block(down, f"{name}_{down}"))
        for j in range(depth):
            block = f"stage_{stage}_block_{j}"
            blocks.append(Block(block, f"{name}_{block}_identity", cut=False))
    blocks[-1] = Block(blocks[-1].name, "layer_normalization")
    return tuple(blocks)


def _densenet_blocks(name: str, depths: tuple[int, ...]) -> tuple[Block, ...]:
    """Each dense layer ``conv{stage}_block{i}``, ending at the concatenation appending its
    output (which carries every earlier feature: a clean cut), and each transition
    ``pool2`` .. ``pool4``; the last block also holds the final ``bn`` / ``relu``."""
    blocks = []
    for stage, depth in enumerate(depths, start=2):
        for i in range(1, depth + 1):
            blocks.append(Block(f"conv{stage}_block{i}", f"conv{stage}_block{i}_concat"))
        if stage < 5:
            blocks.append(Block(f"pool{stage}", f"pool{stage}_pool"))
    blocks[-1] = Block(blocks[-1].name, "relu")
    return tuple(blocks)


_B0_REPEATS = (1, 2, 2, 3, 3, 4, 1)  # MBConv blocks per stage of EfficientNet-B0 (Table 1)
_V2_B_REPEATS = (1, 2, 2, 3, 5, 8)  # blocks per stage of the EfficientNetV2 B0-B3 base


def _mbconv_blocks(repeats: tuple[int, ...], depth: float, first_end: str) -> tuple[Block, ...]:
    """One block per (Fused-)MBConv block, ``block{stage}{letter}``, ending at its residual
    ``add`` where it has one (every block but a stage's first), else at its projection's
    BatchNorm (``first_end`` for the very first block); then ``top`` (``top_conv`` /
    ``top_bn`` / ``top_activation``). Keras rounds repeats up (``round_repeats``)."""
    blocks = []
    for stage, count in enumerate(repeats, start=1):
        for j in range(math.ceil(depth * count)):
            block = f"block{stage}{chr(ord('a') + j)}"
            end = "add" if j else (first_end if stage == 1 else "project_bn")
            blocks.append(Block(block, f"{block}_{end}"))
    blocks.append(Block("top", "top_activation"))
    return tuple(blocks)


def _efficientnet_blocks(name: str, depth_coefficient: float) -> tuple[Block, ...]:
    """EfficientNet-B0's stages scaled by the depth coefficient; see :func:`_mbconv_blocks`."""
    return _mbconv_blocks(_B0_REPEATS, depth_coefficient, "project_bn")


def _efficientnet_v2_blocks(name: str, layout: tuple[tuple[int, ...], float]) -> tuple[Block, ...]:
    """``layout``: blocks per stage and depth coefficient; see :func:`_mbconv_blocks`.

    B0..B3 narrow the stem's width in stage 1 (32 -> 16 channels) in a block without
    expansion, which ends at its projection's activation; S/M/L keep the width, so their
    first block adds its input back.
    """
    repeats, depth_coefficient = layout
    first_end = "project_activation" if repeats == _V2_B_REPEATS else "add"
    return _mbconv_blocks(repeats, depth_coefficient, first_end)


def _inception_resnet_v2_blocks(name: str, layout: None) -> tuple[Block, ...]:
    """The stem with ``mixed_5b``; the residual blocks ``block35_*``, ``block17_*`` and
    ``block8_*``, each ending at the activation after its scaled residual sum; the
    reductions ``mixed_6a`` / ``mixed_7a``; and ``top``, the 1x1 conv ``conv_7b``.
    ``block8_10`` has no activation: it ends at its residual scaling, the 40th
    (auto-named) CustomScaleLayer."""
    return (
        Block("mixed_5b", "mixed_5b"),
        *(Block(f"block35_{i}", f"block35_{i}_ac") for i in range(1, 11)),
        Block("mixed_6a", "mixed_6a"),
        *(Block(f"block17_{i}", f"block17_{i}_ac") for i in range(1, 21)),
        Block("mixed_7a", "mixed_7a"),
        *(Block(f"block8_{i}", f"block8_{i}_ac") for i in range(1, 10)),
        Block("block8_10", "custom_scale_layer_39"),
        Block("top", "conv_7b_ac"),
    )


def _inception_v3_blocks(name: str, layout: None) -> tuple[Block, ...]:
    """The stem with ``mixed0``, then one block per ``mixedN`` concatenation: the cut points
    the Keras fine-tuning guide uses ("unfreeze from mixed9 up")."""
    return tuple(Block(f"mixed{i}", f"mixed{i}") for i in range(11))


def _mobilenet_blocks(name: str, layout: None) -> tuple[Block, ...]:
    """The 13 depthwise-separable blocks, each ending at its pointwise conv's ReLU6;
    ``block1`` also holds the stem."""
    return tuple(Block(f"block{i}", f"conv_pw_{i}_relu") for i in range(1, 14))


# MobileNetV2 blocks that keep their width and stride, so add their input back (Table 2).
_MOBILENET_V2_RESIDUAL = frozenset({2, 4, 5, 7, 8, 9, 11, 12, 14, 15})


def _mobilenet_v2_blocks(name: str, layout: None) -> tuple[Block, ...]:
    """The 17 inverted-residual blocks (``expanded_conv``, then ``block_1`` ..
    ``block_16``), each ending at its residual ``add`` where it has one, else at its
    projection's BatchNorm; then ``top``, the 1x1 conv to 1280 channels."""
    return (
        Block("expanded_conv", "expanded_conv_project_BN"),
        *(
            Block(
                f"block_{i}", f"block_{i}_{'add' if i in _MOBILENET_V2_RESIDUAL else 'project_BN'}"
            )
            for i in range(1, 17)
        ),
        Block("top", "out_relu"),
    )


def _mobilenet_v3_blocks(name: str, layout: tuple[frozenset[int], int, str]) -> tuple[Block, ...]:
    """The inverted-residual blocks (``expanded_conv``, ``expanded_conv_1``, ...) ending at
    their residual ``add`` where they have one (``layout``: those blocks per Tables 1-2,
    the count, the last layer), else at the projection's BatchNorm; then ``top``, the 1x1
    conv ``conv_1`` with its hard-swish (an auto-named ``activation_N``). Its 1024 / 1280
    channel ``conv_2`` belongs to the classifier top."""
    residual, count, last_activation = layout
    blocks = []
    for i in range(count):
        prefix = "expanded_conv" if i == 0 else f"expanded_conv_{i}"
        end = f"{prefix}_add" if i in residual else f"{prefix}_project_bn"
        blocks.append(Block(prefix, end))
    blocks.append(Block("top", last_activation))
    return tuple(blocks)


def _nasnet_blocks(name: str, layout: tuple[int, str]) -> tuple[Block, ...]:
    """One block per cell: the stem reductions ``stem_1`` / ``stem_2``, then ``normal_{i}``
    and ``reduce_{i}`` cells as Keras stacks them (``layout``: normal cells per stack, the
    last layer), each ending at its concatenation. Every cell reads the two cells before
    it, so none is a single-tensor cut; the last also holds the final (auto-named) ReLU."""
    num_blocks, last_activation = layout
    blocks = [Block("stem_1", "reduction_concat_stem_1", cut=False)]
    blocks.append(Block("stem_2", "reduction_concat_stem_2", cut=False))
    for stack in range(3):
        if stack:
            reduce_id = f"reduce_{stack * num_blocks}"
            blocks.append(Block(reduce_id, f"reduction_concat_{reduce_id}", cut=False))
        first = stack * num_blocks + (1 if stack else 0)  # Keras' normal-cell ids
        for cell in range(first, first + num_blocks):
            blocks.append(Block(f"normal_{cell}", f"normal_concat_{cell}", cut=False))
    blocks[-1] = Block(blocks[-1].name, last_activation)
    return tuple(blocks)


def _resnet_blocks(name: str, depths: tuple[int, ...]) -> tuple[Block, ...]:
    """One block per bottleneck, ``conv{stage}_block{i}``, ending at its ``_out`` (after the
    residual add: clean cuts); the first also holds the stem. Pre-activation V2 nets end
    their last block at ``post_relu``, which normalises the last block's sum."""
    blocks = [
        Block(f"conv{stage}_block{i}", f"conv{stage}_block{i}_out")
        for stage, depth in enumerate(depths, start=2)
        for i in range(1, depth + 1)
    ]
    if name.endswith("_v2"):
        blocks[-1] = Block(blocks[-1].name, "post_relu")
    return tuple(blocks)


def _vgg_blocks(name: str, layout: None) -> tuple[Block, ...]:
    """The five convolution blocks, each ending at its max pooling."""
    return tuple(Block(f"block{i}", f"block{i}_pool") for i in range(1, 6))


def _xception_blocks(name: str, layout: None) -> tuple[Block, ...]:
    """The entry, middle and exit flow modules ``block2`` .. ``block14``: blocks 2-13 end at
    their residual Add (auto-named ``add`` .. ``add_11``); ``block2`` also holds the stem
    and ``block14`` ends at the last separable conv's activation."""
    return (
        Block("block2", "add"),
        *(Block(f"block{i}", f"add_{i - 2}") for i in range(3, 14)),
        Block("block14", "block14_sepconv2_act"),
    )


# -- the table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Model:
    """One model's own facts (a row of the table).

    ``layout`` is what the family's blocks function needs (stage depths, depth
    coefficient, ...); ``files`` the Keras file names' variable part (default ``name``).
    """

    family: str  # a key of _FAMILIES
    name: str
    application: Callable[..., Any]
    params: int
    params_with_top: int
    gmacs: float
    top1: float
    hashes: tuple[str | None, str | None]  # of the files with and without the top
    feature_dim: int
    input_size: int = 224
    layout: Any = None
    files: str | None = None


@dataclass(frozen=True)
class _Family:
    """What every model of a family shares.

    ``urls`` are the weight files with and without the top, formatted with ``{file}``
    (the model's ``files``); ``source`` is the Keras module, formatted with ``{name}``;
    ``cache_names``, where Keras caches a file under another name than the URL's.
    """

    paper: str
    license: str
    preprocessing: Preprocessing
    source: str
    urls: tuple[str, str]
    blocks: Callable[[str, Any], tuple[Block, ...]]
    min_input_size: int = 32
    cache_names: tuple[str, str] | None = None


_A = keras.applications
_TF_KERNELS = "{file}_weights_tf_dim_ordering_tf_kernels"

# fmt: off
_FAMILIES = {
    "convnext": _Family(paper="https://arxiv.org/abs/2201.03545", license="MIT (weights converted from facebookresearch/ConvNeXt)", preprocessing=RAW, source="convnext.py", blocks=_convnext_blocks, urls=(_STORAGE + "convnext/{file}.h5", _STORAGE + "convnext/{file}_notop.h5")),
    "densenet": _Family(paper="https://arxiv.org/abs/1608.06993", license="BSD-3-Clause (weights ported from the authors' Torch release)", preprocessing=TORCH, source="densenet.py", blocks=_densenet_blocks, urls=(_STORAGE + "densenet/" + _TF_KERNELS + ".h5", _STORAGE + "densenet/" + _TF_KERNELS + "_notop.h5")),
    "efficientnet": _Family(paper="https://arxiv.org/abs/1905.11946", license=_KERAS_WEIGHTS, preprocessing=RAW, source="efficientnet.py", blocks=_efficientnet_blocks, urls=("https://storage.googleapis.com/keras-applications/{file}.h5", "https://storage.googleapis.com/keras-applications/{file}_notop.h5")),
    "efficientnet_v2": _Family(paper="https://arxiv.org/abs/2104.00298", license=_KERAS_WEIGHTS, preprocessing=RAW, source="efficientnet_v2.py", blocks=_efficientnet_v2_blocks, urls=(_STORAGE + "efficientnet_v2/{file}.h5", _STORAGE + "efficientnet_v2/{file}_notop.h5")),
    "inception_resnet": _Family(paper="https://arxiv.org/abs/1602.07261", license=_KERAS_WEIGHTS, preprocessing=INCEPTION, source="inception_resnet_v2.py", blocks=_inception_resnet_v2_blocks, min_input_size=75, urls=(_STORAGE + "inception_resnet_v2/" + _TF_KERNELS + ".h5", _STORAGE + "inception_resnet_v2/" + _TF_KERNELS + "_notop.h5")),
    "inception": _Family(paper="https://arxiv.org/abs/1512.00567", license=_KERAS_WEIGHTS, preprocessing=INCEPTION, source="inception_v3.py", blocks=_inception_v3_blocks, min_input_size=75, urls=(_STORAGE + "inception_v3/" + _TF_KERNELS + ".h5", _STORAGE + "inception_v3/" + _TF_KERNELS + "_notop.h5")),
    # Keras publishes no hash for the MobileNet V1 and V2 files.
    "mobilenet": _Family(paper="https://arxiv.org/abs/1704.04861", license=_KERAS_WEIGHTS, preprocessing=INCEPTION, source="mobilenet.py", blocks=_mobilenet_blocks, urls=(_STORAGE + "mobilenet/mobilenet_1_0_224_tf.h5", _STORAGE + "mobilenet/mobilenet_1_0_224_tf_no_top.h5")),
    "mobilenet_v2": _Family(paper="https://arxiv.org/abs/1801.04381", license=_KERAS_WEIGHTS, preprocessing=INCEPTION, source="mobilenet_v2.py", blocks=_mobilenet_v2_blocks, urls=(_STORAGE + "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5", _STORAGE + "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5")),
    "mobilenet_v3": _Family(paper="https://arxiv.org/abs/1905.02244", license=_KERAS_WEIGHTS, preprocessing=RAW, source="mobilenet_v3.py", blocks=_mobilenet_v3_blocks, urls=(_STORAGE + "mobilenet_v3/weights_mobilenet_v3_{file}_224_1.0_float.h5", _STORAGE + "mobilenet_v3/weights_mobilenet_v3_{file}_224_1.0_float_no_top_v2.h5")),
    # Keras caches the NASNet files under its own names (nasnet_mobile.h5, ...), not the URL's.
    "nasnet": _Family(paper="https://arxiv.org/abs/1707.07012", license=_KERAS_WEIGHTS, preprocessing=INCEPTION, source="nasnet.py", blocks=_nasnet_blocks, cache_names=("{name}.h5", "{name}_no_top.h5"), urls=(_STORAGE + "nasnet/NASNet-{file}.h5", _STORAGE + "nasnet/NASNet-{file}-no-top.h5")),
    # The stride sits in each stage's first 1x1 convolution, as in the authors' Caffe models.
    "resnet": _Family(paper="https://arxiv.org/abs/1512.03385", license="MIT (weights ported from Kaiming He's Caffe release)", preprocessing=CAFFE, source="resnet.py", blocks=_resnet_blocks, urls=(_STORAGE + "resnet/" + _TF_KERNELS + ".h5", _STORAGE + "resnet/" + _TF_KERNELS + "_notop.h5")),
    # Pre-activation ResNets; as in TF-slim's resnet_v2, each stage downsamples in its last block.
    "resnet_v2": _Family(paper="https://arxiv.org/abs/1603.05027", license=_KERAS_WEIGHTS, preprocessing=INCEPTION, source="resnet_v2.py", blocks=_resnet_blocks, urls=(_STORAGE + "resnet/" + _TF_KERNELS + ".h5", _STORAGE + "resnet/" + _TF_KERNELS + "_notop.h5")),
    "vgg": _Family(paper="https://arxiv.org/abs/1409.1556", license="CC-BY-4.0 (weights released by the Oxford VGG group)", preprocessing=CAFFE, source="{name}.py", blocks=_vgg_blocks, urls=(_STORAGE + "{file}/" + _TF_KERNELS + ".h5", _STORAGE + "{file}/" + _TF_KERNELS + "_notop.h5")),
    "xception": _Family(paper="https://arxiv.org/abs/1610.02357", license="MIT (weights trained by the Keras authors)", preprocessing=INCEPTION, source="xception.py", blocks=_xception_blocks, min_input_size=71, urls=(_STORAGE + "xception/" + _TF_KERNELS + ".h5", _STORAGE + "xception/" + _TF_KERNELS + "_notop.h5")),
}

_MODELS = (
    _Model(family="convnext", name="convnext_tiny", application=_A.ConvNeXtTiny, layout=(3, 3, 9, 3), feature_dim=768, params=27_820_128, params_with_top=28_589_128, gmacs=4.45, top1=0.813, hashes=("8ae6e78ce2933352b1ef4008e6dd2f17bc40771563877d156bc6426c7cf503ff", "d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1")),
    _Model(family="convnext", name="convnext_small", application=_A.ConvNeXtSmall, layout=(3, 3, 27, 3), feature_dim=768, params=49_454_688, params_with_top=50_223_688, gmacs=8.68, top1=0.823, hashes=("ce1277d8f1ee5a0ef0e171469089c18f5233860ceaf9b168049cb9263fd7483c", "6fc8009faa2f00c1c1dfce59feea9b0745eb260a7dd11bee65c8e20843da6eab")),
    _Model(family="convnext", name="convnext_base", application=_A.ConvNeXtBase, layout=(3, 3, 27, 3), feature_dim=1024, params=87_566_464, params_with_top=88_591_464, gmacs=15.4, top1=0.853, hashes=("52cbb006d3dadd03f6e095a8ca1aca47aecdd75acb4bc74bce1f5c695d0086e6", "40a20c5548a5e9202f69735ecc06c990e6b7c9d2de39f0361e27baeb24cb7c45")),
    _Model(family="convnext", name="convnext_large", application=_A.ConvNeXtLarge, layout=(3, 3, 27, 3), feature_dim=1536, params=196_230_336, params_with_top=197_767_336, gmacs=34.4, top1=0.863, hashes=("070c5ed9ed289581e477741d3b34beffa920db8cf590899d6d2c67fba2a198a6", "96f02b6f0753d4f543261bc9d09bed650f24dd6bc02ddde3066135b63d23a1cd")),
    _Model(family="convnext", name="convnext_xlarge", application=_A.ConvNeXtXLarge, layout=(3, 3, 27, 3), feature_dim=2048, params=348_147_968, params_with_top=350_196_968, gmacs=60.9, top1=0.869, hashes=("c1f5ccab661354fc3a79a10fa99af82f0fbf10ec65cb894a3ae0815f17a889ee", "de3f8a54174130e0cecdc71583354753d557fcf1f4487331558e2a16ba0cfe05")),
    _Model(family="densenet", name="densenet121", application=_A.DenseNet121, layout=(6, 12, 24, 16), feature_dim=1024, params=7_037_504, params_with_top=8_062_504, gmacs=2.83, top1=0.750, hashes=("9d60b8095a5708f2dcce2bca79d332c7", "30ee3e1110167f948a6b9946edeeb738")),
    _Model(family="densenet", name="densenet169", application=_A.DenseNet169, layout=(6, 12, 32, 32), feature_dim=1664, params=12_642_880, params_with_top=14_307_880, gmacs=3.36, top1=0.762, hashes=("d699b8f76981ab1b30698df4c175e90b", "b8c4d4c20dd625c148057b9ff1c1176b")),
    _Model(family="densenet", name="densenet201", application=_A.DenseNet201, layout=(6, 12, 48, 32), feature_dim=1920, params=18_321_984, params_with_top=20_242_984, gmacs=4.29, top1=0.773, hashes=("1ceb130c1ea1b78c3bf6114dbdfd8807", "c13680b51ded0fb44dff2d8f86ac8bb1")),
    _Model(family="efficientnet", name="efficientnet_b0", files="efficientnetb0", application=_A.EfficientNetB0, input_size=224, layout=1.0, feature_dim=1280, params=4_049_571, params_with_top=5_330_571, gmacs=0.385, top1=0.771, hashes=("902e53a9f72be733fc0bcb005b3ebbac", "50bc09e76180e00e4465e1a485ddc09d")),
    _Model(family="efficientnet", name="efficientnet_b1", files="efficientnetb1", application=_A.EfficientNetB1, input_size=240, layout=1.1, feature_dim=1280, params=6_575_239, params_with_top=7_856_239, gmacs=0.686, top1=0.791, hashes=("1d254153d4ab51201f1646940f018540", "74c4e6b3e1f6a1eea24c589628592432")),
    _Model(family="efficientnet", name="efficientnet_b2", files="efficientnetb2", application=_A.EfficientNetB2, input_size=260, layout=1.2, feature_dim=1408, params=7_768_569, params_with_top=9_177_569, gmacs=0.992, top1=0.801, hashes=("b15cce36ff4dcbd00b6dd88e7857a6ad", "111f8e2ac8aa800a7a99e3239f7bfb39")),
    _Model(family="efficientnet", name="efficientnet_b3", files="efficientnetb3", application=_A.EfficientNetB3, input_size=300, layout=1.4, feature_dim=1536, params=10_783_535, params_with_top=12_320_535, gmacs=1.83, top1=0.816, hashes=("ffd1fdc53d0ce67064dc6a9c7960ede0", "af6d107764bb5b1abb91932881670226")),
    _Model(family="efficientnet", name="efficientnet_b4", files="efficientnetb4", application=_A.EfficientNetB4, input_size=380, layout=1.8, feature_dim=1792, params=17_673_823, params_with_top=19_466_823, gmacs=4.39, top1=0.829, hashes=("18c95ad55216b8f92d7e70b3a046e2fc", "ebc24e6d6c33eaebbd558eafbeedf1ba")),
    _Model(family="efficientnet", name="efficientnet_b5", files="efficientnetb5", application=_A.EfficientNetB5, input_size=456, layout=2.2, feature_dim=2048, params=28_513_527, params_with_top=30_562_527, gmacs=10.3, top1=0.836, hashes=("ace28f2a6363774853a83a0b21b9421a", "38879255a25d3c92d5e44e04ae6cec6f")),
    _Model(family="efficientnet", name="efficientnet_b6", files="efficientnetb6", application=_A.EfficientNetB6, input_size=528, layout=2.6, feature_dim=2304, params=40_960_143, params_with_top=43_265_143, gmacs=19.1, top1=0.840, hashes=("165f6e37dce68623721b423839de8be5", "9ecce42647a20130c1f39a5d4cb75743")),
    _Model(family="efficientnet", name="efficientnet_b7", files="efficientnetb7", application=_A.EfficientNetB7, input_size=600, layout=3.1, feature_dim=2560, params=64_097_687, params_with_top=66_658_687, gmacs=37.7, top1=0.843, hashes=("8c03f828fec3ef71311cd463b6759d99", "cbcfe4450ddf6f3ad90b1b398090fe4a")),
    _Model(family="efficientnet_v2", name="efficientnet_v2_b0", files="efficientnetv2-b0", application=_A.EfficientNetV2B0, input_size=224, layout=(_V2_B_REPEATS, 1.0), feature_dim=1280, params=5_919_312, params_with_top=7_200_312, gmacs=0.717, top1=0.787, hashes=("21ecbf6da12460d5c40bb2f29ceb2188", "893217f2bb855e2983157299931e43ff")),
    _Model(family="efficientnet_v2", name="efficientnet_v2_b1", files="efficientnetv2-b1", application=_A.EfficientNetV2B1, input_size=240, layout=(_V2_B_REPEATS, 1.1), feature_dim=1280, params=6_931_124, params_with_top=8_212_124, gmacs=1.20, top1=0.798, hashes=("069f0534ff22adf035c89e2d9547a9dc", "0e80663031ca32d657f9caa404b6ec37")),
    _Model(family="efficientnet_v2", name="efficientnet_v2_b2", files="efficientnetv2-b2", application=_A.EfficientNetV2B2, input_size=260, layout=(_V2_B_REPEATS, 1.2), feature_dim=1408, params=8_769_374, params_with_top=10_178_374, gmacs=1.70, top1=0.805, hashes=("424e49f28180edbde1e94797771950a7", "1dfe2e7a5d45b6632553a8961ea609eb")),
    _Model(family="efficientnet_v2", name="efficientnet_v2_b3", files="efficientnetv2-b3", application=_A.EfficientNetV2B3, input_size=300, layout=(_V2_B_REPEATS, 1.4), feature_dim=1536, params=12_930_622, params_with_top=14_467_622, gmacs=3.01, top1=0.821, hashes=("1f1fc43bd98a6e4fd8fdfd551e02c7a0", "f6abf7b5849ac99a89b50dd3fd532856")),
    _Model(family="efficientnet_v2", name="efficientnet_v2_s", files="efficientnetv2-s", application=_A.EfficientNetV2S, input_size=384, layout=((2, 4, 4, 6, 9, 15), 1.0), feature_dim=1280, params=20_331_360, params_with_top=21_612_360, gmacs=8.36, top1=0.839, hashes=("e1d88a8495beba45748fedd0cecbe016", "af0682fb74e8c54910f2d4393339c070")),
    _Model(family="efficientnet_v2", name="efficientnet_v2_m", files="efficientnetv2-m", application=_A.EfficientNetV2M, input_size=480, layout=((3, 5, 5, 7, 14, 18, 5), 1.0), feature_dim=1280, params=53_150_388, params_with_top=54_431_388, gmacs=24.6, top1=0.853, hashes=("a3bf6aa3276309f4fc6a34aa114c95cd", "1b8dc055df72dde80d614482840fe342")),
    _Model(family="efficientnet_v2", name="efficientnet_v2_l", files="efficientnetv2-l", application=_A.EfficientNetV2L, input_size=480, layout=((4, 7, 7, 10, 19, 25, 7), 1.0), feature_dim=1280, params=117_746_848, params_with_top=119_027_848, gmacs=56.1, top1=0.857, hashes=("27e6d408b53c7ebc868fefa357689935", "b0b66b5c863aef5b46e8608fe1711615")),
    _Model(family="inception_resnet", name="inception_resnet_v2", application=_A.InceptionResNetV2, input_size=299, feature_dim=1536, params=54_336_736, params_with_top=55_873_736, gmacs=13.2, top1=0.803, hashes=("e693bd0210a403b3192acc6073ad2e96", "d19885ff4a710c122648d3b5c3b684e4")),
    _Model(family="inception", name="inception_v3", application=_A.InceptionV3, input_size=299, feature_dim=2048, params=21_802_784, params_with_top=23_851_784, gmacs=5.71, top1=0.779, hashes=("9a0d58056eeedaa3f26cb7ebd46da564", "bcbd6486424b2319ff4ef7d526e38f63")),
    _Model(family="mobilenet", name="mobilenet", application=_A.MobileNet, feature_dim=1024, params=3_228_864, params_with_top=4_253_864, gmacs=0.568, top1=0.704, hashes=(None, None)),
    _Model(family="mobilenet_v2", name="mobilenet_v2", application=_A.MobileNetV2, feature_dim=1280, params=2_257_984, params_with_top=3_538_984, gmacs=0.299, top1=0.713, hashes=(None, None)),
    _Model(family="mobilenet_v3", name="mobilenet_v3_small", files="small", application=_A.MobileNetV3Small, layout=(frozenset({2, 4, 5, 7, 9, 10}), 11, "activation_17"), feature_dim=576, params=939_120, params_with_top=2_554_968, gmacs=0.0549, top1=0.682, hashes=("8768d4c2e7dee89b9d02b2d03d65d862", "d3e8ec802a04aa4fc771ee12a9a9b836")),
    _Model(family="mobilenet_v3", name="mobilenet_v3_large", files="large", application=_A.MobileNetV3Large, layout=(frozenset({0, 2, 4, 5, 7, 8, 9, 11, 13, 14}), 15, "activation_19"), feature_dim=960, params=2_996_352, params_with_top=5_507_432, gmacs=0.214, top1=0.752, hashes=("59e551e166be033d707958cf9e29a6a7", "07fb09a5933dd0c8eaafa16978110389")),
    _Model(family="nasnet", name="nasnet_mobile", files="mobile", application=_A.NASNetMobile, input_size=224, layout=(4, "activation_187"), feature_dim=1056, params=4_269_716, params_with_top=5_326_716, gmacs=0.563, top1=0.744, hashes=("020fb642bf7360b370c678b08e0adf61", "1ed92395b5b598bdda52abe5c0dbfd63")),
    _Model(family="nasnet", name="nasnet_large", files="large", application=_A.NASNetLarge, input_size=331, layout=(6, "activation_259"), feature_dim=4032, params=84_916_818, params_with_top=88_949_818, gmacs=23.8, top1=0.825, hashes=("11577c9a518f0070763c2b964a382f17", "d81d89dc07e6e56530c4e77faddd61b5")),
    _Model(family="resnet", name="resnet50", application=_A.ResNet50, layout=(3, 4, 6, 3), feature_dim=2048, params=23_587_712, params_with_top=25_636_712, gmacs=3.86, top1=0.749, hashes=("2cb95161c43110f7111970584f804107", "4d473c1dd8becc155b73f8504c6f6626")),
    _Model(family="resnet", name="resnet101", application=_A.ResNet101, layout=(3, 4, 23, 3), feature_dim=2048, params=42_658_176, params_with_top=44_707_176, gmacs=7.57, top1=0.764, hashes=("f1aeb4b969a6efcfb50fad2f0c20cfc5", "88cf7a10940856eca736dc7b7e228a21")),
    _Model(family="resnet", name="resnet152", application=_A.ResNet152, layout=(3, 8, 36, 3), feature_dim=2048, params=58_370_944, params_with_top=60_419_944, gmacs=11.3, top1=0.766, hashes=("100835be76be38e30d865e96f2aaae62", "ee4c566cf9a93f14d82f913c2dc6dd0c")),
    _Model(family="resnet_v2", name="resnet50_v2", files="resnet50v2", application=_A.ResNet50V2, layout=(3, 4, 6, 3), feature_dim=2048, params=23_564_800, params_with_top=25_613_800, gmacs=3.48, top1=0.760, hashes=("3ef43a0b657b3be2300d5770ece849e0", "fac2f116257151a9d068a22e544a4917")),
    _Model(family="resnet_v2", name="resnet101_v2", files="resnet101v2", application=_A.ResNet101V2, layout=(3, 4, 23, 3), feature_dim=2048, params=42_626_560, params_with_top=44_675_560, gmacs=7.19, top1=0.772, hashes=("6343647c601c52e1368623803854d971", "c0ed64b8031c3730f411d2eb4eea35b5")),
    _Model(family="resnet_v2", name="resnet152_v2", files="resnet152v2", application=_A.ResNet152V2, layout=(3, 8, 36, 3), feature_dim=2048, params=58_331_648, params_with_top=60_380_648, gmacs=10.9, top1=0.780, hashes=("a49b44d1979771252814e80f8ec446f9", "ed17cf2e0169df9d443503ef94b23b33")),
    _Model(family="vgg", name="vgg16", application=_A.VGG16, feature_dim=512, params=14_714_688, params_with_top=138_357_544, gmacs=15.3, top1=0.713, hashes=("64373286793e3c8b2b4e3219cbf3544b", "6d6bbae143d832006294945121d1f1fc")),
    _Model(family="vgg", name="vgg19", application=_A.VGG19, feature_dim=512, params=20_024_384, params_with_top=143_667_240, gmacs=19.5, top1=0.713, hashes=("cbe5617147190e668d6c5d5026f83318", "253f8cb515780f3b799900260a226db6")),
    _Model(family="xception", name="xception", application=_A.Xception, input_size=299, feature_dim=2048, params=20_861_480, params_with_top=22_910_480, gmacs=8.36, top1=0.790, hashes=("0a58e3b7378bc2990ea3b43d5981f1f6", "b0042744bf5b25fce3cb969f33bebb97")),
)
# fmt: on


# -- rows -> specs ----------------------------------------------------------------------------


def keras_builder(application: Callable[..., Any]) -> Callable[..., Any]:
    """A spec builder ``builder(include_top, input_shape)`` around a Keras application.

    The model is built with random weights (``weights=None``) and no pooling; zoo loads
    weights itself (see :mod:`zoo.weights`).
    """

    def build(include_top: bool = False, input_shape: tuple[int, int, int] | None = None):
        return application(include_top=include_top, weights=None, input_shape=input_shape)

    build.__name__ = build.__qualname__ = f"build_{application.__name__}"
    build.__doc__ = f"``keras.applications.{application.__name__}`` with random weights."
    return build


def _weights(family: _Family, model: _Model) -> tuple[WeightSource, WeightSource]:
    """The files with and without the top; 32 hex digits are md5, 64 sha256."""
    sources = []
    for include_top, url, file_hash in zip((True, False), family.urls, model.hashes, strict=True):
        algorithm = "sha256" if file_hash is None else _HASH_ALGORITHMS[len(file_hash)]
        cache_name = None
        if family.cache_names is not None:
            cache_name = family.cache_names[0 if include_top else 1].format(name=model.name)
        sources.append(
            WeightSource(
                url.format(file=model.files or model.name),
                file_hash,
                algorithm,
                include_top=include_top,
                cache_name=cache_name,
            )
        )
    return tuple(sources)


def _spec(model: _Model) -> BackboneSpec:
    family = _FAMILIES[model.family]
    return BackboneSpec(
        name=model.name,
        family=model.family,
        builder=keras_builder(model.application),
        input_size=(model.input_size, model.input_size),
        preprocessing=family.preprocessing,
        feature_dim=model.feature_dim,
        blocks=family.blocks(model.name, model.layout),
        params=model.params,
        params_with_top=model.params_with_top,
        gmacs=model.gmacs,
        top1=model.top1,
        weights=_weights(family, model),
        license=family.license,
        paper=family.paper,
        source=_KERAS_SOURCE + family.source.format(name=model.name),
        min_input_size=family.min_input_size,
    )


for _model in _MODELS:
    register_backbone(_spec(_model))
