"""ResNet50, ResNet101 and ResNet152 (v1).

Paper: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016,
https://arxiv.org/abs/1512.03385.
Source: ``keras.applications.resnet`` (architecture and ImageNet weights, ported from the
authors' Caffe models; the stride sits in each stage's first 1x1 convolution, as there).

Blocks: one per bottleneck residual block, ``conv{stage}_block{i}`` ending at its
``_out`` activation (after the residual add, so every boundary is a clean cut). The
first block also holds the stem (``conv1``, ``pool1``).
"""

from __future__ import annotations

import keras

from zoo.backbones._keras_apps import keras_builder, keras_weights
from zoo.registry import CAFFE, BackboneSpec, Block, register_backbone

_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
_FILE = "{}_weights_tf_dim_ordering_tf_kernels{}.h5"


def _blocks(depths: tuple[int, ...]) -> tuple[Block, ...]:
    return tuple(
        Block(f"conv{stage}_block{i}", f"conv{stage}_block{i}_out")
        for stage, depth in enumerate(depths, start=2)
        for i in range(1, depth + 1)
    )


# name, Keras application, blocks per stage, params, params with top, GMACs, top-1,
# (md5 with top, md5 without top)
_TABLE = (
    ("resnet50", keras.applications.ResNet50, (3, 4, 6, 3), 23_587_712, 25_636_712, 3.86, 0.749,
     ("2cb95161c43110f7111970584f804107", "4d473c1dd8becc155b73f8504c6f6626")),
    ("resnet101", keras.applications.ResNet101, (3, 4, 23, 3), 42_658_176, 44_707_176, 7.57,
     0.764, ("f1aeb4b969a6efcfb50fad2f0c20cfc5", "88cf7a10940856eca736dc7b7e228a21")),
    ("resnet152", keras.applications.ResNet152, (3, 8, 36, 3), 58_370_944, 60_419_944, 11.3,
     0.766, ("100835be76be38e30d865e96f2aaae62", "ee4c566cf9a93f14d82f913c2dc6dd0c")),
)  # fmt: skip


def _spec(name, application, depths, params, params_top, gmacs, top1, hashes) -> BackboneSpec:
    return BackboneSpec(
        name=name,
        family="resnet",
        builder=keras_builder(application),
        input_size=(224, 224),
        preprocessing=CAFFE,
        feature_dim=2048,
        blocks=_blocks(depths),
        params=params,
        params_with_top=params_top,
        gmacs=gmacs,
        top1=top1,
        weights=keras_weights(
            _BASE, (_FILE.format(name, ""), hashes[0]), (_FILE.format(name, "_notop"), hashes[1])
        ),
        license="MIT (weights ported from Kaiming He's Caffe release)",
        paper="https://arxiv.org/abs/1512.03385",
        source="https://github.com/keras-team/keras/blob/master/keras/src/applications/resnet.py",
        min_input_size=32,
    )


for _row in _TABLE:
    register_backbone(_spec(*_row))
