"""The registration site: importing this package registers every backbone family.

Each family lives in its own module, which builds :class:`zoo.registry.BackboneSpec`
entries and registers them at import time. This is the only place that imports them all.
"""

from zoo.backbones import (
    convnext,  # noqa: F401
    densenet,  # noqa: F401
    efficientnet,  # noqa: F401
    efficientnet_lite,  # noqa: F401
    efficientnet_v2,  # noqa: F401
    inception_resnet_v2,  # noqa: F401
    inception_v3,  # noqa: F401
    mobilenet,  # noqa: F401
    mobilenet_v2,  # noqa: F401
    mobilenet_v3,  # noqa: F401
    nasnet,  # noqa: F401
    resnet,  # noqa: F401
    resnet_v2,  # noqa: F401
    vgg,  # noqa: F401
    xception,  # noqa: F401
)
from zoo.backbones._create import build_architecture, create_backbone, fresh_layer_names

__all__ = ["build_architecture", "create_backbone", "fresh_layer_names"]
