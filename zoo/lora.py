"""LoRA: low-rank adapters on a frozen backbone, and their merge for export.

Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022,
https://arxiv.org/abs/2106.09685. A targeted ``Dense`` or ``EinsumDense`` layer with
kernel ``W`` of shape ``(..., out)`` computes with ``W + (alpha / rank) * A @ B``, where
``A`` is ``(..., rank)`` and ``B`` is ``(rank, out)``; only ``A`` and ``B`` train, ``W``
and every other backbone weight stay as loaded. zoo uses Keras' own implementation
(``layer.enable_lora(rank, lora_alpha=alpha)``, keras/src/layers/core/dense.py and
einsum_dense.py): the adapters are the layer's variables ``lora_kernel_a`` and
``lora_kernel_b`` (float32; ``B`` starts at zero, so training starts from the pretrained
function), and Keras sets the base kernel non-trainable.

:class:`LoRA` is a :class:`zoo.policies.Policy`: applied to a classifier it freezes the
whole backbone (BatchNorm in inference mode, LayerNorm frozen), adds adapters to the
targeted layers and leaves only them and the head trainable. The base weights are never
assigned, so a run's starting manifest proves every one of them bitwise unchanged
(:func:`zoo.fingerprint.frozen_paths` counts a LoRA layer's base kernel and bias as
frozen).

:func:`merge_lora` is the export's side: a plain copy of the classifier (no adapters)
whose targeted kernels are Keras' merged ones, ``kernel + (alpha / rank) * A @ B``, and a
:class:`LoRARecord` holding, per layer, the base kernel and the adapters, so a verifier can
prove the base against the pretrained weights and recompute the merge
(:func:`merge_problems`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np

from zoo import fingerprint
from zoo.errors import InvalidValueError
from zoo.policies import (
    HEAD,
    POLICIES,
    Policy,
    PolicySummary,
    backbone_spec,
    get_backbone,
    is_batchnorm,
    is_layernorm,
    summarize,
)
from zoo.registry import BackboneSpec

ADAPTERS = ("lora_kernel_a", "lora_kernel_b")  # Keras' names of a LoRA layer's adapters
# The merged kernel equals base + scale * A @ B to float32 rounding: the largest
# difference allowed, relative to the largest |value| of the recomputed kernel.
MERGE_TOLERANCE = 1e-6
_LORA_TYPES = (keras.layers.Dense, keras.layers.EinsumDense)
# The attention projections' names differ by family: KerasHub's ViT and DINOv2 say
# "query" / "key" / "value", DINOv3 "q_proj" / "k_proj" / "v_proj".
ALIASES = {"query": ("q_proj",), "key": ("k_proj",), "value": ("v_proj",)}


def _walk(layer: Any, prefix: str) -> Iterator[tuple[str, Any, list[Any]]]:
    """Yields ``(structural path, layer, ancestors)`` below ``layer`` (as fingerprint paths)."""
    stack = [(layer, prefix, [])]
    while stack:
        parent, here, ancestors = stack.pop()
        for child in parent._flatten_layers(include_self=False, recursive=False):
            path = f"{here}{child.name}"
            yield path, child, [*ancestors, parent]
            stack.append((child, f"{path}/", [*ancestors, parent]))


def _matches(target: str, name: str, path: str) -> bool:
    if any(c in target for c in "/*?["):
        return fnmatch.fnmatchcase(path, target) or fnmatch.fnmatchcase(path, f"*/{target}")
    return name == target or name in ALIASES.get(target, ())


def target_layers(model: keras.Model, targets: tuple[str, ...]) -> dict[str, Any]:
    """The backbone's ``Dense`` / ``EinsumDense`` layers that ``targets`` name.

    A target without ``/`` or glob characters matches a layer's own name (``"query"``
    matches every attention block's query projection, and the ``"q_proj"`` of families that
    name it so: :data:`ALIASES`); one with them matches the layer's path in the classifier
    (``"*/transformer_block_1/mha/value"``), as in :mod:`zoo.fingerprint`.

    Returns:
        ``{path: layer}``, e.g. ``{"backbone/layer_0/mha/query": <EinsumDense>}``, sorted.

    Raises:
        ValueError: a target matches no Dense or EinsumDense layer of the backbone (the
            message lists the names there are).
    """
    backbone = get_backbone(model)
    candidates = {
        path: layer
        for path, layer, _ in _walk(backbone, f"{backbone.name}/")
        if isinstance(layer, _LORA_TYPES)
    }
    found: dict[str, Any] = {}
    unmatched = []
    for target in targets:
        hits = {p: layer for p, layer in candidates.items() if _matches(target, layer.name, p)}
        if not hits:
            unmatched.append(target)
        found.update(hits)
    if unmatched:
        names = sorted({layer.name for layer in candidates.values()})
        raise InvalidValueError(
            f"LoRA targets {unmatched} match no Dense or EinsumDense layer of the backbone "
            f"{getattr(model, 'backbone_name', backbone.name)!r}; its layer names are "
            f"{names[:20]}{' ...' if len(names) > 20 else ''}"
            + (" (it has none: LoRA needs a transformer's projections)" if not names else "")
            + ". Name layers (e.g. 'query', 'value') or paths with '*'."
        )
    return dict(sorted(found.items()))


def lora_layers(model: keras.Model) -> dict[str, Any]:
    """Every layer of ``model`` with LoRA enabled: ``{path: layer}``, sorted by path."""
    found = {
        path: layer for path, layer, _ in _walk(model, "") if getattr(layer, "lora_enabled", False)
    }
    return dict(sorted(found.items()))


@dataclasses.dataclass(frozen=True)
class LoRA(Policy):
    """Low-rank adapters on the targeted projections; every base weight frozen.

    ``zoo.LoRA(rank=8, alpha=16, targets=("query", "value"))`` is the LoRA paper's setting
    for attention (Hu et al. 2022, section 7.1): each targeted ``Dense`` / ``EinsumDense``
    layer computes with ``kernel + (alpha / rank) * A @ B`` (Keras'
    ``enable_lora(rank, lora_alpha=alpha)``), ``A`` and ``B`` train, the head trains, and
    every other variable of the backbone (its kernels, biases, LayerNorm and BatchNorm
    weights and statistics, embeddings) is frozen; BatchNorm runs in inference mode.
    Applying it again (the next stage, a resume) keeps the adapters it added.

    Args:
        rank: the adapters' rank ``r`` (>= 1).
        alpha: the scale's numerator: the update is ``(alpha / rank) * A @ B`` (> 0).
        targets: layer names (``"query"``, ``"value"``) or paths with ``*`` of the
            backbone's Dense / EinsumDense layers to adapt.

    Raises:
        ValueError: a bad ``rank``, ``alpha`` or ``targets``. At apply time: a target
            that matches no layer, or a layer already adapted with another rank or alpha.
    """

    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("query", "value")

    def __post_init__(self) -> None:
        problems = []
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            problems.append(f"rank must be an integer >= 1, got {self.rank!r}")
        if (
            isinstance(self.alpha, bool)
            or not isinstance(self.alpha, (int, float))
            or not math.isfinite(self.alpha)
            or self.alpha <= 0
        ):
            problems.append(f"alpha must be a number > 0, got {self.alpha!r}")
        targets = (self.targets,) if isinstance(self.targets, str) else self.targets
        if (
            not isinstance(targets, (tuple, list))
            or not targets
            or not all(isinstance(t, str) and t for t in targets)
        ):
            problems.append(
                f"targets must be layer names such as ('query', 'value'), got {self.targets!r}"
            )
        if problems:
            raise InvalidValueError("LoRA: " + "; ".join(problems) + ".")
        object.__setattr__(self, "targets", tuple(targets))
        object.__setattr__(self, "alpha", float(self.alpha))

    @property
    def scale(self) -> float:
        """``alpha / rank``: the factor of ``A @ B`` in the kernel."""
        return self.alpha / self.rank

    def trainable_blocks(self, block_names: tuple[str, ...]) -> tuple[str, ...]:
        """No block's own weights train (the adapters do)."""
        return ()

    def multipliers(self, spec: BackboneSpec) -> dict[str, float]:
        """Every block (its adapters) and the head learn at the stage's rate."""
        return {**{name: 1.0 for name in spec.block_names}, HEAD: 1.0}

    def get_config(self) -> dict[str, Any]:
        """A JSON-able dict; :func:`zoo.policies.policy_from_config` reads it back."""
        return {
            "class_name": type(self).__name__,
            "config": {"rank": self.rank, "alpha": self.alpha, "targets": list(self.targets)},
        }

    def apply(self, model: keras.Model) -> PolicySummary:
        """Freezes the backbone, adds adapters to the targets, trains them and the head.

        Raises:
            ValueError: as :meth:`zoo.policies.Policy.apply`; a target that matches no
                layer; a targeted layer already adapted with another rank or alpha.
        """
        backbone = get_backbone(model)
        backbone_spec(model)
        targets = target_layers(model, self.targets)
        clash = [
            f"{path} (rank {layer.lora_rank}, alpha {layer.lora_alpha})"
            for path, layer in targets.items()
            if getattr(layer, "lora_enabled", False)
            and (layer.lora_rank != self.rank or float(layer.lora_alpha) != self.alpha)
        ]
        if clash:
            raise InvalidValueError(
                f"{self.describe()}: layers already carry adapters of another shape: "
                f"{clash[:3]}; use the same rank and alpha in every LoRA stage."
            )
        for layer in model._flatten_layers(include_self=True):
            layer.trainable = True
        wanted = {id(layer) for layer in targets.values()}
        keep = set(wanted)  # the targets and every layer above one stay trainable
        for _, layer, ancestors in _walk(model, ""):
            if id(layer) in wanted:
                keep.update(id(a) for a in ancestors)
        for _, layer, _ in _walk(backbone, ""):
            if id(layer) not in keep:
                layer.trainable = False
        for layer in [backbone, *(a for _, a, _ in _walk(backbone, "") if id(a) in keep)]:
            for variable in layer._trainable_variables:  # an ancestor's own weights
                variable.trainable = False
        for layer in targets.values():
            if not layer.lora_enabled:
                layer.enable_lora(self.rank, lora_alpha=self.alpha)
            for variable in layer._trainable_variables:
                variable.trainable = any(variable is getattr(layer, a) for a in ADAPTERS)
        frozen_bn = sum(
            1
            for layer in backbone._flatten_layers(include_self=False)
            if is_batchnorm(layer) and not layer.trainable
        )
        frozen_ln = sum(
            1
            for layer in backbone._flatten_layers(include_self=False)
            if is_layernorm(layer) and not layer.trainable
        )
        model.zoo_policy = self
        if getattr(model, "compiled", False):
            model.compiled = False  # force a recompile: the old train step is stale
        return summarize(model, self, self.multipliers(backbone_spec(model)), frozen_bn, frozen_ln)


POLICIES[LoRA.__name__] = LoRA


def add_adapters(model: keras.Model, policies: Any) -> None:
    """Adds the adapters of every :class:`LoRA` among ``policies`` to ``model`` now.

    ``zoo.fine_tune`` calls it before anything else, so a run's variables are the same
    from its first checkpoint on and ``resume=True`` finds the adapters it saved. Which
    weights train is left to each stage's own ``apply``.

    Raises:
        ValueError: as :meth:`LoRA.apply`.
    """
    for policy in policies:
        if isinstance(policy, LoRA):
            policy.apply(model)


# -- the merge, for export and verification ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LoRALayer:
    """One adapted layer: its base kernel and adapters, as numpy arrays.

    Attributes:
        kernel: the kernel's manifest path, e.g. ``"backbone/layer_0/mha/query/kernel"``.
        base: the base kernel ``(..., out)``, as loaded (the variable's own dtype).
        a: ``lora_kernel_a``, ``(..., rank)`` float32.
        b: ``lora_kernel_b``, ``(rank, out)`` float32.
        merged: the kernel the export holds, Keras' ``base + scale * A @ B``.
    """

    kernel: str
    base: np.ndarray
    a: np.ndarray
    b: np.ndarray
    merged: np.ndarray

    @property
    def prefix(self) -> str:
        """The layer's path: the kernel's without ``/kernel``."""
        return self.kernel.rsplit("/", 1)[0]


@dataclasses.dataclass(frozen=True)
class LoRARecord:
    """The adapters a merged export was made from (see :func:`merge_lora`).

    Attributes:
        rank, alpha: as :class:`LoRA`; ``scale`` is ``alpha / rank``.
        layers: one :class:`LoRALayer` per adapted layer, by kernel path.
    """

    rank: int
    alpha: float
    layers: tuple[LoRALayer, ...]

    @property
    def scale(self) -> float:
        """``alpha / rank``."""
        return self.alpha / self.rank

    def arrays(self) -> dict[str, np.ndarray]:
        """``{"<layer path>/base" | "/lora_kernel_a" | "/lora_kernel_b": array}``."""
        out = {}
        for layer in self.layers:
            out[f"{layer.prefix}/base"] = layer.base
            out[f"{layer.prefix}/{ADAPTERS[0]}"] = layer.a
            out[f"{layer.prefix}/{ADAPTERS[1]}"] = layer.b
        return out

    def hashes(self) -> dict[str, str]:
        """sha256 of each of :meth:`arrays` (``zoo.fingerprint.array_sha256``)."""
        return {key: fingerprint.array_sha256(value) for key, value in self.arrays().items()}


def merge_lora(model: keras.Model) -> tuple[keras.Model, LoRARecord | None]:
    """A copy of a classifier with every LoRA layer's adapters merged into its kernel.

    The copy is rebuilt from the classifier's config without the LoRA policy (so it has
    no adapter variables) and takes every weight by manifest path; each adapted kernel
    becomes the kernel Keras computes with, ``kernel + (alpha / rank) * A @ B`` (the
    layer's ``kernel`` property), in the kernel's dtype. Its outputs equal the LoRA
    model's to float rounding.

    Args:
        model: a classifier from ``zoo.build_classifier`` after :class:`LoRA` was applied
            (and trained).

    Returns:
        ``(merged_model, record)``; ``(model, None)`` when no layer has LoRA enabled.

    Raises:
        ValueError: adapted layers disagree on rank or alpha, or the model is not a
            zoo classifier (it cannot be rebuilt without adapters).
    """
    adapted = lora_layers(model)
    if not adapted:
        return model, None
    shapes = {(layer.lora_rank, float(layer.lora_alpha)) for layer in adapted.values()}
    if len(shapes) != 1:
        raise InvalidValueError(
            f"The LoRA layers use different ranks or alphas {sorted(shapes)}; a merged export "
            "records one rank and alpha."
        )
    if not hasattr(type(model), "from_config") or not hasattr(model, "backbone_name"):
        raise InvalidValueError(
            f"merge_lora rebuilds a zoo classifier without adapters; {model.name!r} is not one."
        )
    rank, alpha = shapes.pop()
    layers = []
    merged_values = {}
    for path, layer in adapted.items():
        kernel_path = f"{path}/kernel"
        merged = np.asarray(keras.ops.convert_to_numpy(layer.kernel))
        base = np.asarray(keras.ops.convert_to_numpy(layer._kernel))
        merged = merged.astype(base.dtype)
        merged_values[kernel_path] = merged
        layers.append(
            LoRALayer(
                kernel=kernel_path,
                base=base,
                a=np.asarray(keras.ops.convert_to_numpy(layer.lora_kernel_a)),
                b=np.asarray(keras.ops.convert_to_numpy(layer.lora_kernel_b)),
                merged=merged,
            )
        )
    config = dict(model.get_config(), policy=None)
    plain = type(model).from_config(config)
    values = dict(fingerprint.named_weights(model))
    missing = []
    for path, variable in fingerprint.named_weights(plain):
        if path in merged_values:
            variable.assign(merged_values[path])
        elif path in values:
            variable.assign(values[path])
        else:
            missing.append(path)
    extra = sorted(
        p
        for p in values
        if p not in dict(fingerprint.named_weights(plain)) and p.rsplit("/", 1)[-1] not in ADAPTERS
    )
    if missing or extra:
        raise InvalidValueError(
            f"merge_lora: the rebuilt classifier does not match the trained one (missing "
            f"{missing[:3]}, extra {extra[:3]}); layer names changed between builds."
        )
    plain.zoo_weights = dict(getattr(model, "zoo_weights", {}) or {})
    return plain, LoRARecord(rank=int(rank), alpha=float(alpha), layers=tuple(layers))


def recompute_merge(base: np.ndarray, a: np.ndarray, b: np.ndarray, scale: float) -> np.ndarray:
    """``base + scale * A @ B`` in float64 (the reference a merged kernel is checked with).

    Args:
        base: ``(..., out)``; a: ``(..., rank)``; b: ``(rank, out)``.

    Returns:
        float64 array of ``base``'s shape.
    """
    return base.astype(np.float64) + scale * np.matmul(a.astype(np.float64), b.astype(np.float64))


def merge_problems(
    name: str,
    merged: np.ndarray,
    base: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    scale: float,
    tolerance: float = MERGE_TOLERANCE,
) -> list[str]:
    """Whether ``merged`` is ``base + scale * A @ B`` to float rounding.

    Holds when ``max |merged - reference| <= tolerance * max(|reference|)`` with
    ``reference`` :func:`recompute_merge` (float64): float32's rounding of the sum and of
    a rank-``r`` matmul is about 1e-7 of the kernel's scale, a changed weight far more.

    Returns:
        One line naming ``name`` per problem (shapes, NaN, the difference); empty when it
        holds.
    """
    if (
        a.ndim != base.ndim
        or a.shape[:-1] != base.shape[:-1]
        or b.shape != (a.shape[-1],) + (base.shape[-1],)
    ):
        return [
            f"{name}: adapter shapes A{list(a.shape)} B{list(b.shape)} do not fit the kernel "
            f"{list(base.shape)}"
        ]
    if merged.shape != base.shape:
        return [f"{name}: merged kernel {list(merged.shape)} != base {list(base.shape)}"]
    reference = recompute_merge(base, a, b, scale)
    diff = float(np.max(np.abs(merged.astype(np.float64) - reference))) if merged.size else 0.0
    bound = tolerance * max(float(np.max(np.abs(reference))) if reference.size else 0.0, 1e-30)
    if not diff <= bound:  # also catches NaN
        return [
            f"{name}: the exported kernel is not base + {scale:g} * A @ B (max |difference| "
            f"{diff:.3g} > {bound:.3g}, relative tolerance {tolerance:g})"
        ]
    return []


def trainable_share(model: keras.Model) -> tuple[int, int]:
    """``(trainable parameters, all parameters)`` of ``model`` as it is now.

    All parameters count every weight (trainable or not, BatchNorm statistics included).
    """
    trainable = sum(math.prod(v.shape) for v in model.trainable_weights)
    total = sum(math.prod(v.shape) for v in model.weights)
    return int(trainable), int(total)
