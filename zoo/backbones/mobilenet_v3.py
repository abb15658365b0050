"""MobileNetV3Small and MobileNetV3Large (width 1.0, not minimalistic).

Paper: Howard et al., "Searching for MobileNetV3", ICCV 2019,
https://arxiv.org/abs/1905.02244.
Source: ``keras.applications.mobilenet_v3`` (architecture and ImageNet weights, ported
from the TF-slim reference). The model rescales 0..255 pixels itself.

Blocks: the inverted-residual blocks (Keras' ``expanded_conv``, then
``expanded_conv_1`` ..), each ending at its residual ``add`` where it has one, else at its
projection's BatchNorm; then ``top``, the 1x1 convolution ``conv_1`` with its BatchNorm and
hard-swish (an auto-named ``activation_N`` layer, stable because zoo builds in a fresh
naming scope). Without the top, the features are ``conv_1``'s 576 (small) or 960 (large)
channels; the classifier's 1024 / 1280-channel ``conv_2`` belongs to the top.
"""

from __future__ import annotations

import keras

from zoo.backbones._keras_apps import keras_builder, keras_weights
from zoo.registry import RAW, BackboneSpec, Block, register_backbone

_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/"


def _blocks(residual: set[int], count: int, last_activation: str) -> tuple[Block, ...]:
    blocks = []
    for i in range(count):
        prefix = "expanded_conv" if i == 0 else f"expanded_conv_{i}"
        blocks.append(Block(prefix, f"{prefix}_add" if i in residual else f"{prefix}_project_bn"))
    blocks.append(Block("top", last_activation))
    return tuple(blocks)


# name, Keras application, Keras variant, blocks with a residual add (paper, Tables 1-2),
# block count, last layer, features, params, params with top, GMACs, top-1,
# (md5 with top, md5 without top)
_TABLE = (
    ("mobilenet_v3_small", keras.applications.MobileNetV3Small, "small",
     {2, 4, 5, 7, 9, 10}, 11, "activation_17", 576, 939_120, 2_554_968, 0.0549, 0.682,
     ("8768d4c2e7dee89b9d02b2d03d65d862", "d3e8ec802a04aa4fc771ee12a9a9b836")),
    ("mobilenet_v3_large", keras.applications.MobileNetV3Large, "large",
     {0, 2, 4, 5, 7, 8, 9, 11, 13, 14}, 15, "activation_19", 960, 2_996_352, 5_507_432, 0.214,
     0.752, ("59e551e166be033d707958cf9e29a6a7", "07fb09a5933dd0c8eaafa16978110389")),
)  # fmt: skip


def _spec(name, application, variant, residual, count, last, features, params, params_top,
          gmacs, top1, hashes) -> BackboneSpec:  # fmt: skip
    return BackboneSpec(
        name=name,
        family="mobilenet_v3",
        builder=keras_builder(application),
        input_size=(224, 224),
        preprocessing=RAW,
        feature_dim=features,
        blocks=_blocks(residual, count, last),
        params=params,
        params_with_top=params_top,
        gmacs=gmacs,
        top1=top1,
        weights=keras_weights(
            _BASE,
            (f"weights_mobilenet_v3_{variant}_224_1.0_float.h5", hashes[0]),
            (f"weights_mobilenet_v3_{variant}_224_1.0_float_no_top_v2.h5", hashes[1]),
        ),
        license="Apache-2.0 (Keras applications weights)",
        paper="https://arxiv.org/abs/1905.02244",
        source=(
            "https://github.com/keras-team/keras/blob/master/keras/src/applications/mobilenet_v3.py"
        ),
        min_input_size=32,
    )


for _row in _TABLE:
    register_backbone(_spec(*_row))
