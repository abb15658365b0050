"""The registration site: importing this package registers every backbone.

Three tables, one per source: :mod:`zoo.backbones.keras_applications` (every model
``keras.applications`` ships, as keyword rows), :mod:`zoo.backbones.efficientnet_lite`
(the family zoo builds itself) and :mod:`zoo.backbones.keras_hub` (KerasHub's vision
presets, from a generated table; building them needs keras-hub). Building a backbone from
its spec is :mod:`zoo.builder`'s job; its names are re-exported here for callers that
import them from this package.
"""

from zoo.backbones import (
    efficientnet_lite,  # noqa: F401
    keras_applications,  # noqa: F401
    keras_hub,  # noqa: F401
)
from zoo.builder import build_architecture, create_backbone, fresh_layer_names

__all__ = ["build_architecture", "create_backbone", "fresh_layer_names"]
