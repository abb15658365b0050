"""EfficientNetB0 .. EfficientNetB7.

Paper: Tan and Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks", ICML 2019, https://arxiv.org/abs/1905.11946.
Source: ``keras.applications.efficientnet`` (architecture and ImageNet weights, ported
from the TF TPU reference). The model rescales and normalises 0..255 pixels itself.

Blocks: one per MBConv block, ``block{stage}{letter}`` as Keras names them, ending at its
residual ``add`` where it has one (every block but a stage's first), else at its
projection's BatchNorm; the first block also holds the stem. Then ``top``: the 1x1
convolution ``top_conv`` with ``top_bn`` and ``top_activation``.
"""

from __future__ import annotations

import math

import keras

from zoo.backbones._keras_apps import keras_builder, keras_weights
from zoo.registry import RAW, BackboneSpec, Block, register_backbone

_BASE = "https://storage.googleapis.com/keras-applications/"
_REPEATS = (1, 2, 2, 3, 3, 4, 1)  # MBConv blocks per stage in B0 (paper, Table 1)


def _blocks(depth_coefficient: float) -> tuple[Block, ...]:
    blocks = []
    for stage, repeats in enumerate(_REPEATS, start=1):
        for j in range(math.ceil(depth_coefficient * repeats)):  # Keras' round_repeats
            name = f"block{stage}{chr(ord('a') + j)}"
            blocks.append(Block(name, f"{name}_add" if j else f"{name}_project_bn"))
    blocks.append(Block("top", "top_activation"))
    return tuple(blocks)


# variant, Keras application, input size, depth coefficient, features, params,
# params with top, GMACs, top-1, (md5 with top, md5 without top)
_TABLE = (
    ("b0", keras.applications.EfficientNetB0, 224, 1.0, 1280, 4_049_571, 5_330_571, 0.385,
     0.771, ("902e53a9f72be733fc0bcb005b3ebbac", "50bc09e76180e00e4465e1a485ddc09d")),
    ("b1", keras.applications.EfficientNetB1, 240, 1.1, 1280, 6_575_239, 7_856_239, 0.686,
     0.791, ("1d254153d4ab51201f1646940f018540", "74c4e6b3e1f6a1eea24c589628592432")),
    ("b2", keras.applications.EfficientNetB2, 260, 1.2, 1408, 7_768_569, 9_177_569, 0.992,
     0.801, ("b15cce36ff4dcbd00b6dd88e7857a6ad", "111f8e2ac8aa800a7a99e3239f7bfb39")),
    ("b3", keras.applications.EfficientNetB3, 300, 1.4, 1536, 10_783_535, 12_320_535, 1.83,
     0.816, ("ffd1fdc53d0ce67064dc6a9c7960ede0", "af6d107764bb5b1abb91932881670226")),
    ("b4", keras.applications.EfficientNetB4, 380, 1.8, 1792, 17_673_823, 19_466_823, 4.39,
     0.829, ("18c95ad55216b8f92d7e70b3a046e2fc", "ebc24e6d6c33eaebbd558eafbeedf1ba")),
    ("b5", keras.applications.EfficientNetB5, 456, 2.2, 2048, 28_513_527, 30_562_527, 10.3,
     0.836, ("ace28f2a6363774853a83a0b21b9421a", "38879255a25d3c92d5e44e04ae6cec6f")),
    ("b6", keras.applications.EfficientNetB6, 528, 2.6, 2304, 40_960_143, 43_265_143, 19.1,
     0.840, ("165f6e37dce68623721b423839de8be5", "9ecce42647a20130c1f39a5d4cb75743")),
    ("b7", keras.applications.EfficientNetB7, 600, 3.1, 2560, 64_097_687, 66_658_687, 37.7,
     0.843, ("8c03f828fec3ef71311cd463b6759d99", "cbcfe4450ddf6f3ad90b1b398090fe4a")),
)  # fmt: skip


def _spec(variant, application, size, depth, features, params, params_top, gmacs, top1,
          hashes) -> BackboneSpec:  # fmt: skip
    keras_name = f"efficientnet{variant}"
    return BackboneSpec(
        name=f"efficientnet_{variant}",
        family="efficientnet",
        builder=keras_builder(application),
        input_size=(size, size),
        preprocessing=RAW,
        feature_dim=features,
        blocks=_blocks(depth),
        params=params,
        params_with_top=params_top,
        gmacs=gmacs,
        top1=top1,
        weights=keras_weights(
            _BASE, (f"{keras_name}.h5", hashes[0]), (f"{keras_name}_notop.h5", hashes[1])
        ),
        license="Apache-2.0 (Keras applications weights)",
        paper="https://arxiv.org/abs/1905.11946",
        source=(
            "https://github.com/keras-team/keras/blob/master/keras/src/applications/efficientnet.py"
        ),
        min_input_size=32,
    )


for _row in _TABLE:
    register_backbone(_spec(*_row))
