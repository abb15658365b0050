"""A strict importer of PyTorch state dicts into Keras 3 models.

The importer is general: a *layer map* names, for each Keras layer, the PyTorch module
whose parameters it takes (``{"stem_conv": "_conv_stem", ...}``). :func:`layer_rules`
turns that map into one :class:`Rule` per Keras variable, with the layout conversion its
layer type needs:

========================  =====================================  =======================
Keras layer               PyTorch tensor                          conversion
========================  =====================================  =======================
Conv2D ``kernel``         ``weight`` (out, in, kh, kw)            -> (kh, kw, in, out)
DepthwiseConv2D kernel    ``weight`` (channels, 1, kh, kw)        -> (kh, kw, channels, 1)
Dense ``kernel``          ``weight`` (out, in)                    -> (in, out)
``bias``                  ``bias``                                unchanged
BatchNormalization        ``weight``, ``bias``, ``running_mean``,  gamma, beta,
                          ``running_var``                         moving_mean/variance
========================  =====================================  =======================

:func:`assign_state_dict` is strict: every checkpoint tensor (except BatchNorm's
``num_batches_tracked`` counters and keys the caller skips on purpose) must be used
exactly once, every Keras variable assigned exactly once, with matching shapes. Otherwise
it raises one :class:`CheckpointMismatchError` that lists every problem, and assigns
nothing. The same approach as KerasHub's timm converters and tfimm, with the strictness
of Keras' own ``load_weights``.

torch is an optional dependency (``pip install "zoo[torch]"``) imported only when a
checkpoint is read; converted models need no torch.

This module is a leaf: it imports nothing of the registry, the backbones or the weights
cache. The per-family layer map travels on the spec (``WeightSource.torch``) and
``zoo.builder`` converts into the cache.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import InvalidValueError, MissingFileError, UnknownNameError, ZooError

TORCH_PIN = "torch==2.13.0"

# Keras variable name -> (PyTorch parameter name, layout) per supported layer type.
_BATCHNORM = {
    "gamma": ("weight", "copy"),
    "beta": ("bias", "copy"),
    "moving_mean": ("running_mean", "copy"),
    "moving_variance": ("running_var", "copy"),
}
_LAYER_VARIABLES = {
    "Conv2D": {"kernel": ("weight", "conv"), "bias": ("bias", "copy")},
    "DepthwiseConv2D": {"kernel": ("weight", "depthwise"), "bias": ("bias", "copy")},
    "Dense": {"kernel": ("weight", "dense"), "bias": ("bias", "copy")},
    "BatchNormalization": _BATCHNORM,
}
# Axis orders that turn a PyTorch layout into Keras'.
_TRANSPOSES = {
    "copy": None,
    "conv": (2, 3, 1, 0),  # (out, in, kh, kw) -> (kh, kw, in, out)
    "depthwise": (2, 3, 0, 1),  # (channels, 1, kh, kw) -> (kh, kw, channels, 1)
    "dense": (1, 0),  # (out, in) -> (in, out)
}
_IGNORED_SUFFIXES = (".num_batches_tracked",)


class CheckpointMismatchError(ZooError, ValueError):
    """A checkpoint does not fit the Keras model; the message lists every problem.

    Attributes:
        problems: one line per leftover, missing, doubly assigned or reshaped tensor.
    """

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message)
        self.problems = problems


@dataclass(frozen=True)
class Rule:
    """Where one checkpoint tensor goes.

    Attributes:
        key: the state-dict key, e.g. ``"_blocks.0._depthwise_conv.weight"``.
        variable: the Keras variable's path, e.g. ``"block1a_dwconv/kernel"``.
        layout: ``"copy"``, ``"conv"``, ``"depthwise"`` or ``"dense"`` (see module docs).
    """

    key: str
    variable: str
    layout: str = "copy"

    def __post_init__(self) -> None:
        if self.layout not in _TRANSPOSES:
            raise InvalidValueError(
                f"Unknown layout {self.layout!r} for {self.key!r}; expected one of "
                f"{sorted(_TRANSPOSES)}."
            )


def require_torch() -> Any:
    """Imports torch, or explains how to install the CPU build.

    Raises:
        ImportError: torch is not installed.
    """
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            "Reading PyTorch checkpoints needs torch, which is not installed. Install it "
            f'with `pip install "zoo[torch]"` (or `pip install {TORCH_PIN}`; the pin '
            "avoids pulling several GB of CUDA packages)."
        ) from error
    return torch


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PyTorch checkpoint safely into NumPy arrays.

    Uses ``torch.load(..., weights_only=True)``, which refuses pickled code. A checkpoint
    that wraps its state dict as ``{"state_dict": {...}}`` is unwrapped.

    Args:
        path: a ``.pth`` / ``.pt`` file holding a state dict (name -> tensor).

    Returns:
        ``{key: float32 or integer numpy array}`` in the checkpoint's order.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ImportError: torch is not installed (with the install command).
        ValueError: the file does not hold a state dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"No such PyTorch checkpoint: {path}")
    torch = require_torch()
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and torch's own errors alike
        raise InvalidValueError(
            f"{path} is not a PyTorch checkpoint that loads with weights_only=True: {error}"
        ) from error
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise InvalidValueError(
            f"{path} holds a {type(loaded).__name__}, not a state dict of tensors; save "
            "the model with torch.save(model.state_dict(), path)."
        )
    return {str(k): v.detach().cpu().numpy() for k, v in loaded.items()}


def layer_rules(model: Any, layer_map: Mapping[str, str]) -> list[Rule]:
    """One :class:`Rule` per variable of the mapped Keras layers.

    Args:
        model: a built keras.Model.
        layer_map: Keras layer name -> PyTorch module prefix (``"stem_bn" -> "_bn0"``).

    Returns:
        Rules for every variable of every mapped layer (a bias only where the layer has one).

    Raises:
        KeyError: a mapped layer is not in the model.
        ValueError: a mapped layer's type has no known conversion.
    """
    names = {layer.name for layer in model.layers}
    unknown = sorted(set(layer_map) - names)
    if unknown:
        raise UnknownNameError(
            f"Layer map names layers that {model.name!r} does not have: {unknown}."
        )
    rules = []
    for layer in model.layers:
        prefix = layer_map.get(layer.name)
        if prefix is None:
            continue
        kind = type(layer).__name__
        if kind not in _LAYER_VARIABLES:
            raise InvalidValueError(
                f"No PyTorch conversion for layer {layer.name!r} of type {kind}; supported: "
                f"{sorted(_LAYER_VARIABLES)}."
            )
        for variable in layer.weights:
            torch_name, layout = _LAYER_VARIABLES[kind][variable.name]
            rules.append(Rule(f"{prefix}.{torch_name}", variable.path, layout))
    return rules


def convert_layout(array: np.ndarray, layout: str) -> np.ndarray:
    """Rearranges a PyTorch tensor into the Keras layout (see the module docs).

    Raises:
        ValueError: the array has the wrong number of dimensions for ``layout``.
    """
    axes = _TRANSPOSES[layout]
    if axes is None:
        return array
    if array.ndim != len(axes):
        raise InvalidValueError(
            f"a {layout} weight needs {len(axes)} dimensions, got {array.shape}"
        )
    return np.transpose(array, axes)


def _mismatch_error(model_name: str, problems: list[str]) -> CheckpointMismatchError:
    # The first line must stand alone (the CLI prints only it): counts and one example.
    kinds: dict[str, int] = {}
    for problem in problems:
        kind = problem.split(":", 1)[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    counts = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
    listing = "\n  ".join(problems)
    return CheckpointMismatchError(
        f"The checkpoint does not fit model {model_name!r} ({counts}; first: {problems[0]}); "
        f"nothing was assigned. All {len(problems)} problem(s):\n  {listing}\n"
        "Is it a checkpoint of this architecture and variant?",
        problems,
    )


def assign_state_dict(
    model: Any,
    state_dict: Mapping[str, np.ndarray],
    rules: Iterable[Rule],
    skip: Iterable[str] = (),
) -> None:
    """Assigns checkpoint tensors to ``model``'s variables, all or nothing.

    Args:
        model: a built keras.Model.
        state_dict: key -> array, as from :func:`load_state_dict`.
        rules: where each tensor goes (see :func:`layer_rules`).
        skip: keys deliberately left unused (e.g. the classifier when importing without
            top). ``*.num_batches_tracked`` counters are always skipped.

    Raises:
        CheckpointMismatchError: lists every checkpoint tensor left over, every tensor a
            rule needs but the checkpoint lacks, every Keras variable not assigned or
            assigned twice, and every shape mismatch. Nothing is assigned then.
    """
    rules = list(rules)
    skip = set(skip)
    variables = {v.path: v for v in model.weights}
    problems: list[str] = []
    values: dict[str, np.ndarray] = {}

    targets: dict[str, list[str]] = {}
    for rule in rules:
        targets.setdefault(rule.variable, []).append(rule.key)
    for path, keys in targets.items():
        if path not in variables:
            problems.append(f"no such Keras variable: {path} (for {', '.join(keys)})")
        elif len(keys) > 1:
            problems.append(f"Keras variable {path} assigned more than once: {', '.join(keys)}")
    for path in variables.keys() - targets.keys():
        problems.append(
            f"Keras variable not assigned: {path} {tuple(variables[path].shape)} "
            "(no checkpoint tensor maps to it)"
        )

    used: dict[str, int] = {}
    for rule in rules:
        used[rule.key] = used.get(rule.key, 0) + 1
        if rule.key not in state_dict:
            problems.append(f"missing in checkpoint: {rule.key} (for {rule.variable})")
            continue
        variable = variables.get(rule.variable)
        if variable is None:
            continue
        array = state_dict[rule.key]
        try:
            converted = convert_layout(array, rule.layout)
        except ValueError as error:
            problems.append(f"shape mismatch: {rule.key} {array.shape}: {error}")
            continue
        if converted.shape != tuple(variable.shape):
            problems.append(
                f"shape mismatch: {rule.key} {array.shape} becomes {converted.shape} as "
                f"{rule.layout}, but {rule.variable} is {tuple(variable.shape)}"
            )
            continue
        values[rule.variable] = converted
    for key, count in used.items():
        if count > 1:
            problems.append(f"checkpoint tensor used more than once: {key} ({count} rules)")
    for key in state_dict:
        if key not in used and key not in skip and not key.endswith(_IGNORED_SUFFIXES):
            problems.append(
                f"left over in checkpoint: {key} {state_dict[key].shape} (nothing maps it)"
            )

    if problems:
        raise _mismatch_error(model.name, sorted(problems))
    for path, value in values.items():
        variables[path].assign(value.astype(variables[path].dtype, copy=False))


def convert_checkpoint(
    checkpoint: str | os.PathLike,
    model: Any,
    layer_map: Mapping[str, str],
    skip: Iterable[str] = (),
) -> Any:
    """Strictly imports a PyTorch checkpoint file into a built Keras model.

    :func:`load_state_dict`, then :func:`layer_rules` and :func:`assign_state_dict`. Which
    model and which layer map are the caller's business (``zoo.builder`` takes both from
    the backbone's spec), so this module knows nothing of the registry.

    Args:
        checkpoint: the ``.pth`` state dict.
        model: a built keras.Model of the checkpoint's architecture.
        layer_map: Keras layer name -> PyTorch module prefix.
        skip: checkpoint keys deliberately left unused (e.g. the classifier).

    Returns:
        ``model``, now holding the checkpoint's weights.

    Raises:
        FileNotFoundError: no such checkpoint.
        ImportError: torch is not installed.
        KeyError: the layer map names layers the model does not have.
        CheckpointMismatchError: the checkpoint does not fit (every problem listed);
            nothing is assigned then.
    """
    state_dict = load_state_dict(checkpoint)
    assign_state_dict(model, state_dict, layer_rules(model, layer_map), skip)
    return model
