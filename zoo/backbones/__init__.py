"""The registration site: importing this package registers every backbone.

Two tables, one per source: :mod:`zoo.backbones.keras_applications` (every model
``keras.applications`` ships, as keyword rows) and :mod:`zoo.backbones.efficientnet_lite`
(the family zoo builds itself). Building a backbone from its spec is :mod:`zoo.builder`'s
job; its names are re-exported here for callers that import them from this package.
"""

from zoo.backbones import (
    efficientnet_lite,  # noqa: F401
    keras_applications,  # noqa: F401
)
from zoo.builder import build_architecture, create_backbone, fresh_layer_names

__all__ = ["build_architecture", "create_backbone", "fresh_layer_names"]
