"""ResNet50V2, ResNet101V2 and ResNet152V2 (pre-activation ResNets).

Paper: He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016,
https://arxiv.org/abs/1603.05027.
Source: ``keras.applications.resnet_v2`` (architecture and ImageNet weights; as in
TF-slim's ``resnet_v2``, each stage downsamples in its last block).

Blocks: one per pre-activation bottleneck block, ``conv{stage}_block{i}`` ending at its
``_out`` residual add. The first block also holds the stem; the last one also holds the
final ``post_bn`` / ``post_relu``, which normalise the last block's sum.
"""

from __future__ import annotations

import keras

from zoo.backbones._keras_apps import keras_builder, keras_weights
from zoo.registry import INCEPTION, BackboneSpec, Block, register_backbone

_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
_FILE = "{}_weights_tf_dim_ordering_tf_kernels{}.h5"


def _blocks(depths: tuple[int, ...]) -> tuple[Block, ...]:
    blocks = [
        Block(f"conv{stage}_block{i}", f"conv{stage}_block{i}_out")
        for stage, depth in enumerate(depths, start=2)
        for i in range(1, depth + 1)
    ]
    blocks[-1] = Block(blocks[-1].name, "post_relu")
    return tuple(blocks)


# name, Keras application, blocks per stage, params, params with top, GMACs, top-1,
# (md5 with top, md5 without top)
_TABLE = (
    ("resnet50_v2", keras.applications.ResNet50V2, (3, 4, 6, 3), 23_564_800, 25_613_800, 3.48,
     0.760, ("3ef43a0b657b3be2300d5770ece849e0", "fac2f116257151a9d068a22e544a4917")),
    ("resnet101_v2", keras.applications.ResNet101V2, (3, 4, 23, 3), 42_626_560, 44_675_560,
     7.19, 0.772, ("6343647c601c52e1368623803854d971", "c0ed64b8031c3730f411d2eb4eea35b5")),
    ("resnet152_v2", keras.applications.ResNet152V2, (3, 8, 36, 3), 58_331_648, 60_380_648,
     10.9, 0.780, ("a49b44d1979771252814e80f8ec446f9", "ed17cf2e0169df9d443503ef94b23b33")),
)  # fmt: skip


def _spec(name, application, depths, params, params_top, gmacs, top1, hashes) -> BackboneSpec:
    keras_name = name.replace("_", "")  # Keras' files say resnet50v2
    return BackboneSpec(
        name=name,
        family="resnet_v2",
        builder=keras_builder(application),
        input_size=(224, 224),
        preprocessing=INCEPTION,
        feature_dim=2048,
        blocks=_blocks(depths),
        params=params,
        params_with_top=params_top,
        gmacs=gmacs,
        top1=top1,
        weights=keras_weights(
            _BASE,
            (_FILE.format(keras_name, ""), hashes[0]),
            (_FILE.format(keras_name, "_notop"), hashes[1]),
        ),
        license="Apache-2.0 (Keras applications weights)",
        paper="https://arxiv.org/abs/1603.05027",
        source="https://github.com/keras-team/keras/blob/master/keras/src/applications/resnet_v2.py",
        min_input_size=32,
    )


for _row in _TABLE:
    register_backbone(_spec(*_row))
