"""MobileNet (v1, width 1.0).

Paper: Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile
Vision Applications", 2017, https://arxiv.org/abs/1704.04861.
Source: ``keras.applications.mobilenet`` (architecture and ImageNet weights, ported from
TF-slim).

Blocks: the 13 depthwise-separable blocks ``block1`` .. ``block13``, each ending at its
pointwise convolution's ReLU6 (``conv_pw_{i}_relu``); ``block1`` also holds the stem.
"""

from __future__ import annotations

import keras

from zoo.backbones._keras_apps import keras_builder, keras_weights
from zoo.registry import INCEPTION, BackboneSpec, Block, register_backbone

_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet/"

register_backbone(
    BackboneSpec(
        name="mobilenet",
        family="mobilenet",
        builder=keras_builder(keras.applications.MobileNet),
        input_size=(224, 224),
        preprocessing=INCEPTION,
        feature_dim=1024,
        blocks=tuple(Block(f"block{i}", f"conv_pw_{i}_relu") for i in range(1, 14)),
        params=3_228_864,
        params_with_top=4_253_864,
        gmacs=0.568,
        top1=0.704,
        # Keras publishes no hash for these files.
        weights=keras_weights(
            _BASE, ("mobilenet_1_0_224_tf.h5", None), ("mobilenet_1_0_224_tf_no_top.h5", None)
        ),
        license="Apache-2.0 (Keras applications weights)",
        paper="https://arxiv.org/abs/1704.04861",
        source="https://github.com/keras-team/keras/blob/master/keras/src/applications/mobilenet.py",
        min_input_size=32,
    )
)
