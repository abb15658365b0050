"""Checkpoint importers: PyTorch state dicts -> Keras variables (see :mod:`zoo.convert.pytorch`).

torch is imported only when a checkpoint is read, so importing this package is cheap. A leaf:
it knows nothing of the registry, the backbones or the weights cache (``zoo.builder`` does).
"""

from zoo.convert.pytorch import (
    CheckpointMismatchError,
    Rule,
    assign_state_dict,
    convert_checkpoint,
    convert_layout,
    layer_rules,
    load_state_dict,
    require_torch,
)

__all__ = [
    "CheckpointMismatchError",
    "Rule",
    "assign_state_dict",
    "convert_checkpoint",
    "convert_layout",
    "layer_rules",
    "load_state_dict",
    "require_torch",
]
