"""MobileNetV2 (width 1.0).

Paper: Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR
2018, https://arxiv.org/abs/1801.04381.
Source: ``keras.applications.mobilenet_v2`` (architecture and ImageNet weights, ported
from TF-slim).

Blocks: the 17 inverted-residual blocks (Keras' ``expanded_conv`` is block 0, then
``block_1`` .. ``block_16``), each ending at its residual ``add`` where it has one, else
at its projection's BatchNorm; then ``top``, the 1x1 convolution to 1280 channels
(``Conv_1`` .. ``out_relu``).
"""

from __future__ import annotations

import keras

from zoo.backbones._keras_apps import keras_builder, keras_weights
from zoo.registry import INCEPTION, BackboneSpec, Block, register_backbone

_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224{}.h5"

# Blocks that keep their width and stride, and so add their input back (paper, Table 2).
_RESIDUAL = {2, 4, 5, 7, 8, 9, 11, 12, 14, 15}

_BLOCKS = (
    Block("expanded_conv", "expanded_conv_project_BN"),
    *(
        Block(f"block_{i}", f"block_{i}_add" if i in _RESIDUAL else f"block_{i}_project_BN")
        for i in range(1, 17)
    ),
    Block("top", "out_relu"),
)

register_backbone(
    BackboneSpec(
        name="mobilenet_v2",
        family="mobilenet_v2",
        builder=keras_builder(keras.applications.MobileNetV2),
        input_size=(224, 224),
        preprocessing=INCEPTION,
        feature_dim=1280,
        blocks=_BLOCKS,
        params=2_257_984,
        params_with_top=3_538_984,
        gmacs=0.299,
        top1=0.713,
        # Keras publishes no hash for these files.
        weights=keras_weights(_BASE, (_FILE.format(""), None), (_FILE.format("_no_top"), None)),
        license="Apache-2.0 (Keras applications weights)",
        paper="https://arxiv.org/abs/1801.04381",
        source=(
            "https://github.com/keras-team/keras/blob/master/keras/src/applications/mobilenet_v2.py"
        ),
        min_input_size=32,
    )
)
