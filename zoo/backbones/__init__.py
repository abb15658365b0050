"""The registration site: importing this package registers every backbone family.

Each family lives in its own module, which builds :class:`zoo.registry.BackboneSpec`
entries and registers them at import time. This is the only place that imports them all.
"""

from zoo.backbones import inception_v3  # noqa: F401
from zoo.backbones._create import build_architecture, create_backbone, fresh_layer_names

__all__ = ["build_architecture", "create_backbone", "fresh_layer_names"]
