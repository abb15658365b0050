"""EfficientNetV2: B0 .. B3, S, M and L.

Paper: Tan and Le, "EfficientNetV2: Smaller Models and Faster Training", ICML 2021,
https://arxiv.org/abs/2104.00298.
Source: ``keras.applications.efficientnet_v2`` (architecture and ImageNet weights, ported
from the authors' TF reference). The model rescales 0..255 pixels itself.

Blocks: one per Fused-MBConv / MBConv block, ``block{stage}{letter}`` as Keras names them,
ending at its residual ``add`` where it has one, else at its projection (its BatchNorm, or
its activation in B0-B3's first block, which has no expansion); the first block also holds
the stem. Then ``top``: the 1x1 convolution ``top_conv`` with ``top_bn`` and
``top_activation``.
"""

from __future__ import annotations

import math

import keras

from zoo.backbones._keras_apps import keras_builder, keras_weights
from zoo.registry import RAW, BackboneSpec, Block, register_backbone

_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/efficientnet_v2/"
_B_REPEATS = (1, 2, 2, 3, 5, 8)  # blocks per stage of the B0-B3 base network


def _blocks(repeats: tuple[int, ...], depth_coefficient: float) -> tuple[Block, ...]:
    # S/M/L keep the stem's width in stage 1, so its first block adds its input back;
    # B0-B3 narrow it (32 -> 16 channels), ending that block at its projection's activation.
    first_end = "add" if repeats != _B_REPEATS else "project_activation"
    blocks = []
    for stage, count in enumerate(repeats, start=1):
        for j in range(math.ceil(depth_coefficient * count)):  # Keras' round_repeats
            name = f"block{stage}{chr(ord('a') + j)}"
            end = "add" if j else (first_end if stage == 1 else "project_bn")
            blocks.append(Block(name, f"{name}_{end}"))
    blocks.append(Block("top", "top_activation"))
    return tuple(blocks)


# variant, Keras application, input size, blocks per stage, depth coefficient, features,
# params, params with top, GMACs, top-1, (md5 with top, md5 without top)
_TABLE = (
    ("b0", keras.applications.EfficientNetV2B0, 224, _B_REPEATS, 1.0, 1280, 5_919_312,
     7_200_312, 0.717, 0.787,
     ("21ecbf6da12460d5c40bb2f29ceb2188", "893217f2bb855e2983157299931e43ff")),
    ("b1", keras.applications.EfficientNetV2B1, 240, _B_REPEATS, 1.1, 1280, 6_931_124,
     8_212_124, 1.20, 0.798,
     ("069f0534ff22adf035c89e2d9547a9dc", "0e80663031ca32d657f9caa404b6ec37")),
    ("b2", keras.applications.EfficientNetV2B2, 260, _B_REPEATS, 1.2, 1408, 8_769_374,
     10_178_374, 1.70, 0.805,
     ("424e49f28180edbde1e94797771950a7", "1dfe2e7a5d45b6632553a8961ea609eb")),
    ("b3", keras.applications.EfficientNetV2B3, 300, _B_REPEATS, 1.4, 1536, 12_930_622,
     14_467_622, 3.01, 0.821,
     ("1f1fc43bd98a6e4fd8fdfd551e02c7a0", "f6abf7b5849ac99a89b50dd3fd532856")),
    ("s", keras.applications.EfficientNetV2S, 384, (2, 4, 4, 6, 9, 15), 1.0, 1280,
     20_331_360, 21_612_360, 8.36, 0.839,
     ("e1d88a8495beba45748fedd0cecbe016", "af0682fb74e8c54910f2d4393339c070")),
    ("m", keras.applications.EfficientNetV2M, 480, (3, 5, 5, 7, 14, 18, 5), 1.0, 1280,
     53_150_388, 54_431_388, 24.6, 0.853,
     ("a3bf6aa3276309f4fc6a34aa114c95cd", "1b8dc055df72dde80d614482840fe342")),
    ("l", keras.applications.EfficientNetV2L, 480, (4, 7, 7, 10, 19, 25, 7), 1.0, 1280,
     117_746_848, 119_027_848, 56.1, 0.857,
     ("27e6d408b53c7ebc868fefa357689935", "b0b66b5c863aef5b46e8608fe1711615")),
)  # fmt: skip


def _spec(variant, application, size, repeats, depth, features, params, params_top, gmacs,
          top1, hashes) -> BackboneSpec:  # fmt: skip
    keras_name = f"efficientnetv2-{variant}"  # Keras' model and file names
    return BackboneSpec(
        name=f"efficientnet_v2_{variant}",
        family="efficientnet_v2",
        builder=keras_builder(application),
        input_size=(size, size),
        preprocessing=RAW,
        feature_dim=features,
        blocks=_blocks(repeats, depth),
        params=params,
        params_with_top=params_top,
        gmacs=gmacs,
        top1=top1,
        weights=keras_weights(
            _BASE, (f"{keras_name}.h5", hashes[0]), (f"{keras_name}_notop.h5", hashes[1])
        ),
        license="Apache-2.0 (Keras applications weights)",
        paper="https://arxiv.org/abs/2104.00298",
        source=(
            "https://github.com/keras-team/keras/blob/master/keras/src/applications/"
            "efficientnet_v2.py"
        ),
        min_input_size=32,
    )


for _row in _TABLE:
    register_backbone(_spec(*_row))
