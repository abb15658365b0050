"""Checkpoint importers: PyTorch state dicts -> Keras variables (see :mod:`zoo.convert.pytorch`).

torch is imported only when a checkpoint is read, so importing this package is cheap.
"""

from zoo.convert.pytorch import (
    CheckpointMismatchError,
    Rule,
    assign_state_dict,
    convert_checkpoint,
    convert_layout,
    import_torch_checkpoint,
    layer_rules,
    load_state_dict,
    register_torch_mapping,
    require_torch,
)

__all__ = [
    "CheckpointMismatchError",
    "Rule",
    "assign_state_dict",
    "convert_checkpoint",
    "convert_layout",
    "import_torch_checkpoint",
    "layer_rules",
    "load_state_dict",
    "register_torch_mapping",
    "require_torch",
]
