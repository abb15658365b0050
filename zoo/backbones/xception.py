"""Xception.

Paper: Chollet, "Xception: Deep Learning with Depthwise Separable Convolutions", CVPR
2017, https://arxiv.org/abs/1610.02357.
Source: ``keras.applications.xception`` (architecture and ImageNet weights).

Blocks: the paper's entry, middle and exit flow modules, Keras' ``block2`` .. ``block14``.
Blocks 2-13 end at their residual ``Add`` (auto-named ``add`` .. ``add_11``, stable because
zoo builds in a fresh naming scope); ``block2`` also holds the stem (``block1``) and
``block14`` ends at the last separable convolution's activation.
"""

from __future__ import annotations

import keras

from zoo.backbones._keras_apps import keras_builder, keras_weights
from zoo.registry import INCEPTION, BackboneSpec, Block, register_backbone

_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/xception/"

_BLOCKS = (
    Block("block2", "add"),
    *(Block(f"block{i}", f"add_{i - 2}") for i in range(3, 14)),
    Block("block14", "block14_sepconv2_act"),
)

register_backbone(
    BackboneSpec(
        name="xception",
        family="xception",
        builder=keras_builder(keras.applications.Xception),
        input_size=(299, 299),
        preprocessing=INCEPTION,
        feature_dim=2048,
        blocks=_BLOCKS,
        params=20_861_480,
        params_with_top=22_910_480,
        gmacs=8.36,
        top1=0.790,
        weights=keras_weights(
            _BASE,
            ("xception_weights_tf_dim_ordering_tf_kernels.h5", "0a58e3b7378bc2990ea3b43d5981f1f6"),
            (
                "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
                "b0042744bf5b25fce3cb969f33bebb97",
            ),
        ),
        license="MIT (weights trained by the Keras authors)",
        paper="https://arxiv.org/abs/1610.02357",
        source="https://github.com/keras-team/keras/blob/master/keras/src/applications/xception.py",
        min_input_size=71,
    )
)
