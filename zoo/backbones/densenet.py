"""DenseNet121, DenseNet169 and DenseNet201.

Paper: Huang et al., "Densely Connected Convolutional Networks", CVPR 2017,
https://arxiv.org/abs/1608.06993.
Source: ``keras.applications.densenet`` (architecture and ImageNet weights, ported from
the authors' Torch release).

Blocks: each dense layer ``conv{stage}_block{i}`` (BN-ReLU-1x1-BN-ReLU-3x3, ending at the
concatenation that appends its output, which carries every earlier feature and so is a
clean cut), and each transition ``pool2`` .. ``pool4`` (BN-ReLU-1x1 conv-average
pooling). The first block also holds the stem; the last also holds the final ``bn`` /
``relu``.
"""

from __future__ import annotations

import keras

from zoo.backbones._keras_apps import keras_builder, keras_weights
from zoo.registry import TORCH, BackboneSpec, Block, register_backbone

_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/densenet/"
_FILE = "{}_weights_tf_dim_ordering_tf_kernels{}.h5"


def _blocks(depths: tuple[int, ...]) -> tuple[Block, ...]:
    blocks = []
    for stage, depth in enumerate(depths, start=2):
        for i in range(1, depth + 1):
            blocks.append(Block(f"conv{stage}_block{i}", f"conv{stage}_block{i}_concat"))
        if stage < 5:
            blocks.append(Block(f"pool{stage}", f"pool{stage}_pool"))
    blocks[-1] = Block(blocks[-1].name, "relu")
    return tuple(blocks)


# name, Keras application, dense layers per block, features, params, params with top,
# GMACs, top-1, (md5 with top, md5 without top)
_TABLE = (
    ("densenet121", keras.applications.DenseNet121, (6, 12, 24, 16), 1024, 7_037_504,
     8_062_504, 2.83, 0.750,
     ("9d60b8095a5708f2dcce2bca79d332c7", "30ee3e1110167f948a6b9946edeeb738")),
    ("densenet169", keras.applications.DenseNet169, (6, 12, 32, 32), 1664, 12_642_880,
     14_307_880, 3.36, 0.762,
     ("d699b8f76981ab1b30698df4c175e90b", "b8c4d4c20dd625c148057b9ff1c1176b")),
    ("densenet201", keras.applications.DenseNet201, (6, 12, 48, 32), 1920, 18_321_984,
     20_242_984, 4.29, 0.773,
     ("1ceb130c1ea1b78c3bf6114dbdfd8807", "c13680b51ded0fb44dff2d8f86ac8bb1")),
)  # fmt: skip


def _spec(name, application, depths, features, params, params_top, gmacs, top1, hashes):
    return BackboneSpec(
        name=name,
        family="densenet",
        builder=keras_builder(application),
        input_size=(224, 224),
        preprocessing=TORCH,
        feature_dim=features,
        blocks=_blocks(depths),
        params=params,
        params_with_top=params_top,
        gmacs=gmacs,
        top1=top1,
        weights=keras_weights(
            _BASE, (_FILE.format(name, ""), hashes[0]), (_FILE.format(name, "_notop"), hashes[1])
        ),
        license="BSD-3-Clause (weights ported from the authors' Torch release)",
        paper="https://arxiv.org/abs/1608.06993",
        source="https://github.com/keras-team/keras/blob/master/keras/src/applications/densenet.py",
        min_input_size=32,
    )


for _row in _TABLE:
    register_backbone(_spec(*_row))
