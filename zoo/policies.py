"""Freezing and fine-tuning policies, BatchNorm modes and per-block learning rates.

A policy decides which blocks of a classifier's backbone train (see
:class:`zoo.registry.Block`: the blocks each BackboneSpec names, bottom to top), whether
BatchNorm layers train, and how each block's learning rate relates to the head's
(fastai's discriminative learning rates: Howard and Ruder, "Universal Language Model
Fine-tuning for Text Classification", ACL 2018, https://arxiv.org/abs/1801.06146).

"Frozen" BatchNorm means ``trainable=False``: Keras then runs the layer in inference mode
(its moving mean and variance never change) and does not train gamma and beta, also in
blocks that are otherwise unfrozen (the Keras transfer-learning guide's advice).

Per-block learning rates: scaling gradients would not change Adam's or AdamW's steps
(they divide by the gradient's own scale), so zoo's optimizers scale the learning rate
itself, per variable, inside ``update_step``; see :func:`make_optimizer`.

Changing ``trainable`` needs a recompile (the compiled train step and the optimizer know
the old variables), so :meth:`Policy.apply` marks a compiled model as not compiled:
``fit`` then refuses to run until the caller compiles again.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import keras

from zoo.errors import InvalidValueError
from zoo.registry import BackboneSpec, get_spec

BATCHNORM_MODES = ("frozen", "trainable")
LAYERNORM_MODES = ("frozen", "trainable")
HEAD = "head"  # the group of every variable outside the backbone (head, preprocessing)


# -- blocks -------------------------------------------------------------------------------


def get_backbone(model: keras.Model) -> keras.Model:
    """The model's layer named ``"backbone"``.

    Raises:
        ValueError: ``model`` has no layer called ``"backbone"``.
    """
    for layer in getattr(model, "layers", []):
        if layer.name == "backbone":
            return layer
    names = [layer.name for layer in getattr(model, "layers", [])]
    raise InvalidValueError(
        f"Policies need a model with a layer named 'backbone', as zoo.build_classifier makes; "
        f"{getattr(model, 'name', type(model).__name__)!r} has layers {names[:10]}"
        f"{' ...' if len(names) > 10 else ''}."
    )


def backbone_spec(model: keras.Model) -> BackboneSpec:
    """The registered spec of the model's backbone (``model.backbone_name``).

    Raises:
        ValueError: the model has no ``"backbone"`` layer or does not say which
            registered backbone it is (set ``model.backbone_name`` for models not made
            by ``zoo.build_classifier``).
        KeyError: ``backbone_name`` is not registered.
    """
    get_backbone(model)
    name = getattr(model, "backbone_name", None)
    if name is None:
        raise InvalidValueError(
            f"Model {model.name!r} does not record which registered backbone it uses; build it "
            "with zoo.build_classifier, or set model.backbone_name = '<registry name>'."
        )
    return get_spec(name)


def block_layers(backbone: keras.Model, spec: BackboneSpec) -> dict[str, list[keras.Layer]]:
    """Maps each block of ``spec`` to its layers of ``backbone``, bottom to top.

    A block holds the layers of ``backbone.layers`` after the previous block's ``end``
    up to and including its own ``end`` (the first block also holds the input layer).

    Raises:
        ValueError: a block's end layer is missing, out of order, or layers remain after
            the last block's end (all such problems at once).
    """
    index = {layer.name: i for i, layer in enumerate(backbone.layers)}
    problems, groups, start = [], {}, 0
    for block in spec.blocks:
        end = index.get(block.end)
        if end is None:
            problems.append(f"block {block.name!r} ends at {block.end!r}, which is not a layer")
            continue
        if end < start:
            problems.append(
                f"block {block.name!r} ends at {block.end!r}, before the previous block"
            )
            continue
        groups[block.name] = backbone.layers[start : end + 1]
        start = end + 1
    if not problems and start != len(backbone.layers):
        rest = [layer.name for layer in backbone.layers[start:]]
        problems.append(
            f"layers {rest[:5]} come after the last block's end {spec.blocks[-1].end!r}"
        )
    if problems:
        raise InvalidValueError(
            f"The blocks of {spec.name!r} do not match its Keras model: "
            + "; ".join(problems)
            + ". Fix the BackboneSpec's blocks."
        )
    return groups


def variable_groups(model: keras.Model) -> dict[str, list[keras.Variable]]:
    """The model's weights grouped by backbone block (bottom to top), then ``"head"``.

    ``"head"`` holds every weight outside the backbone (the head's, the preprocessing's).
    Random-seed state (dropout) is not a weight and is left out.

    Raises:
        ValueError: as :func:`get_backbone`, :func:`backbone_spec`, :func:`block_layers`.
    """
    backbone = get_backbone(model)
    groups: dict[str, list[keras.Variable]] = {}
    seen: set[int] = set()
    for name, layers in block_layers(backbone, backbone_spec(model)).items():
        groups[name] = _unique([w for layer in layers for w in layer.weights], seen)
    seen.update(id(w) for w in backbone.weights)
    groups[HEAD] = _unique(list(model.weights), seen)
    return groups


def _unique(weights: list[keras.Variable], seen: set[int]) -> list[keras.Variable]:
    out = []
    for w in weights:
        if id(w) not in seen:
            seen.add(id(w))
            out.append(w)
    return out


def is_batchnorm(layer: keras.Layer) -> bool:
    """Whether ``layer`` keeps moving statistics (Keras BatchNormalization, sync or not)."""
    return isinstance(layer, keras.layers.BatchNormalization)


def is_layernorm(layer: keras.Layer) -> bool:
    """Whether ``layer`` is a Keras LayerNormalization (transformers' norm layers)."""
    return isinstance(layer, keras.layers.LayerNormalization)


def batchnorm_statistics(model: keras.Model) -> list[keras.Variable]:
    """The moving mean and variance variables of every BatchNorm layer in ``model``."""
    out = []
    for layer in model._flatten_layers(include_self=False):
        if is_batchnorm(layer):
            out += [layer.moving_mean, layer.moving_variance]
    return out


# -- summary ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GroupSummary:
    """Trainability of one block (or the head) after a policy was applied.

    Attributes:
        name: block name, or ``"head"``.
        trainable: whether the policy trains this group.
        trainable_variables / frozen_variables: numbers of weight variables.
        trainable_params / frozen_params: numbers of scalars in them.
        lr_multiplier: the group's learning-rate factor (``None`` when frozen).
    """

    name: str
    trainable: bool
    trainable_variables: int
    frozen_variables: int
    trainable_params: int
    frozen_params: int
    lr_multiplier: float | None


@dataclasses.dataclass(frozen=True)
class PolicySummary:
    """What :meth:`Policy.apply` did, per block bottom to top, then the head.

    ``str(summary)`` is a table; ``summary.groups`` holds :class:`GroupSummary` rows.
    """

    policy: str
    groups: tuple[GroupSummary, ...]
    frozen_batchnorm_layers: int
    frozen_layernorm_layers: int = 0

    @property
    def trainable_params(self) -> int:
        """Scalars the policy trains, in every group."""
        return sum(g.trainable_params for g in self.groups)

    @property
    def total_params(self) -> int:
        """Scalars of every weight of the model (trainable or not)."""
        return sum(g.trainable_params + g.frozen_params for g in self.groups)

    @property
    def trainable_share(self) -> float:
        """Trainable parameters as a fraction of the model's (0 for an empty model)."""
        return self.trainable_params / self.total_params if self.total_params else 0.0

    @property
    def trainable_blocks(self) -> list[str]:
        """Names of the backbone blocks that train (bottom to top)."""
        return [g.name for g in self.groups if g.trainable and g.name != HEAD]

    @property
    def lr_multipliers(self) -> dict[str, float]:
        """Learning-rate multiplier of every trainable group."""
        return {g.name: g.lr_multiplier for g in self.groups if g.lr_multiplier is not None}

    def __str__(self) -> str:
        header = ("group", "trains", "trainable vars", "frozen vars", "trainable params", "lr x")
        rows = [header] + [
            (
                g.name,
                "yes" if g.trainable else "no",
                str(g.trainable_variables),
                str(g.frozen_variables),
                f"{g.trainable_params:,}",
                "-" if g.lr_multiplier is None else f"{g.lr_multiplier:g}",
            )
            for g in self.groups
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = [self.policy, f"frozen BatchNorm layers: {self.frozen_batchnorm_layers}"]
        if self.frozen_layernorm_layers:
            lines.append(f"frozen LayerNorm layers: {self.frozen_layernorm_layers}")
        lines.append(
            f"trainable parameters: {self.trainable_params:,} of {self.total_params:,} "
            f"({100 * self.trainable_share:.2f}%)"
        )
        lines += [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
        ]
        lines.append("Recompile the model before training (the policy changed `trainable`).")
        return "\n".join(lines)


# -- policies -----------------------------------------------------------------------------


class Policy:
    """Base class: which blocks train, the BatchNorm mode, per-block learning rates."""

    name: ClassVar[str] = "policy"
    batchnorm: str = "frozen"
    layernorm: str = "trainable"
    lr_decay: float | None = None
    lr_multipliers: Mapping[str, float] | None = None

    def trainable_blocks(self, block_names: tuple[str, ...]) -> tuple[str, ...]:
        """The blocks this policy trains, bottom to top."""
        raise NotImplementedError

    def multipliers(self, spec: BackboneSpec) -> dict[str, float]:
        """Learning-rate multiplier per trainable group (blocks and ``"head"``).

        With ``lr_decay=d`` the head gets 1, the top trainable block ``d``, the next
        ``d**2``, and so on down. With ``lr_multipliers`` the listed groups get their
        value and the others 1.

        Raises:
            ValueError: ``lr_multipliers`` names an unknown or frozen block.
        """
        trainable = self.trainable_blocks(spec.block_names)
        out = {name: 1.0 for name in trainable}
        out[HEAD] = 1.0
        if self.lr_decay is not None:
            for depth, name in enumerate(reversed(trainable), start=1):
                out[name] = float(self.lr_decay) ** depth
        if self.lr_multipliers:
            unknown = [k for k in self.lr_multipliers if k != HEAD and k not in spec.block_names]
            frozen = [k for k in self.lr_multipliers if k in spec.block_names and k not in out]
            problems = []
            if unknown:
                problems.append(f"unknown blocks {unknown} (blocks: {list(spec.block_names)})")
            if frozen:
                problems.append(f"blocks {frozen} are frozen by {self.describe()}")
            if problems:
                raise InvalidValueError("lr_multipliers: " + "; ".join(problems) + ".")
            out.update({k: float(v) for k, v in self.lr_multipliers.items()})
        return out

    def describe(self) -> str:
        """The policy as it would be written in Python."""
        fields = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if getattr(self, f.name) != f.default
        )
        return f"{type(self).__name__}({fields})"

    def get_config(self) -> dict[str, Any]:
        """A JSON-able dict; :func:`policy_from_config` turns it back into the policy."""
        config = dataclasses.asdict(self)  # type: ignore[call-overload]
        if config.get("lr_multipliers") is not None:
            config["lr_multipliers"] = dict(config["lr_multipliers"])
        return {"class_name": type(self).__name__, "config": config}

    def apply(self, model: keras.Model) -> PolicySummary:
        """Sets ``layer.trainable`` on ``model`` and returns what is frozen now.

        The whole model is made trainable, then every layer of the frozen blocks is set
        non-trainable and, with ``batchnorm="frozen"``, every BatchNorm layer of the
        backbone too (with ``layernorm="frozen"``, every LayerNorm layer too). The policy is recorded on the model (``model.zoo_policy``, kept in
        a classifier's config). A compiled model is marked not compiled: compile again
        (with :func:`make_optimizer`) before training.

        Raises:
            ValueError: the model has no ``"backbone"`` layer or registry name, the
                policy asks for more blocks than the backbone has, or ``lr_multipliers``
                names unknown or frozen blocks.
        """
        backbone = get_backbone(model)
        spec = backbone_spec(model)
        groups = block_layers(backbone, spec)
        trainable = set(self.trainable_blocks(spec.block_names))
        multipliers = self.multipliers(spec)
        # Keras skips `trainable = True` on a layer that is already trainable, without
        # reaching its sublayers, so every layer is set on its own.
        for layer in model._flatten_layers(include_self=True):
            layer.trainable = True
        for name, layers in groups.items():
            if name not in trainable:
                for layer in layers:
                    layer.trainable = False
        n_bn = n_ln = 0
        for layer in backbone._flatten_layers(include_self=False):
            if is_batchnorm(layer):
                if self.batchnorm == "frozen":
                    layer.trainable = False
                n_bn += not layer.trainable
            elif is_layernorm(layer):
                if self.layernorm == "frozen":
                    layer.trainable = False
                n_ln += not layer.trainable
        model.zoo_policy = self
        if getattr(model, "compiled", False):
            model.compiled = False  # force a recompile: the old train step is stale
        return summarize(model, self, multipliers, n_bn, n_ln)


def summarize(
    model: keras.Model,
    policy: Policy,
    multipliers: Mapping[str, float] | None = None,
    frozen_batchnorm_layers: int = 0,
    frozen_layernorm_layers: int = 0,
) -> PolicySummary:
    """A :class:`PolicySummary` of the model's current trainability."""
    multipliers = multipliers or {}
    trainable = _trainable_ids(model)
    rows = []
    for name, weights in variable_groups(model).items():
        train = [w for w in weights if id(w) in trainable]
        frozen = [w for w in weights if id(w) not in trainable]
        rows.append(
            GroupSummary(
                name=name,
                trainable=bool(train),
                trainable_variables=len(train),
                frozen_variables=len(frozen),
                trainable_params=sum(math.prod(w.shape) for w in train),
                frozen_params=sum(math.prod(w.shape) for w in frozen),
                lr_multiplier=multipliers.get(name) if train else None,
            )
        )
    return PolicySummary(
        policy.describe(), tuple(rows), frozen_batchnorm_layers, frozen_layernorm_layers
    )


def _trainable_ids(model: keras.Model) -> set[int]:
    return {id(v) for v in model.trainable_weights}


def _check_lr_options(
    lr_decay: float | None, lr_multipliers: Mapping[str, float] | None
) -> list[str]:
    problems = []
    if lr_decay is not None and lr_multipliers is not None:
        problems.append("give lr_decay or lr_multipliers, not both")
    if lr_decay is not None and not (isinstance(lr_decay, (int, float)) and 0 < lr_decay <= 1):
        problems.append(f"lr_decay must be in (0, 1], got {lr_decay!r}")
    if lr_multipliers is not None:
        if not isinstance(lr_multipliers, Mapping):
            problems.append(
                f"lr_multipliers must map block names to factors, e.g. {{'mixed10': 1.0, "
                f"'mixed9': 0.5}}; got {type(lr_multipliers).__name__}"
            )
        else:
            bad = {
                k: v
                for k, v in lr_multipliers.items()
                if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0
            }
            if bad:
                problems.append(f"lr_multipliers must be finite and > 0; got {bad}")
    return problems


def _check_batchnorm(batchnorm: str, layernorm: str = "trainable") -> list[str]:
    problems = []
    if batchnorm not in BATCHNORM_MODES:
        problems.append(f"batchnorm must be one of {BATCHNORM_MODES}, got {batchnorm!r}")
    if layernorm not in LAYERNORM_MODES:
        problems.append(f"layernorm must be one of {LAYERNORM_MODES}, got {layernorm!r}")
    return problems


def _raise_if(problems: list[str], where: str) -> None:
    if problems:
        raise InvalidValueError(f"{where}: " + "; ".join(problems) + ".")


@dataclasses.dataclass(frozen=True)
class FreezeBackbone(Policy):
    """Trains only the head; the whole backbone, BatchNorm included, is frozen.

    Stage one of the Keras transfer-learning guide and of fastai's ``fine_tune``.
    """

    def trainable_blocks(self, block_names: tuple[str, ...]) -> tuple[str, ...]:
        return ()


@dataclasses.dataclass(frozen=True)
class UnfreezeTop(Policy):
    """Trains the head and the top ``blocks`` blocks (or the top ``fraction`` of them).

    fastai's ``freeze_to(-n)``; the Keras InceptionV3 fine-tuning example unfreezes the
    top two inception blocks (``UnfreezeTop(blocks=2)``).

    Args:
        blocks: how many blocks, counted from the top, train (>= 1).
        fraction: alternatively, the fraction of blocks that train, in (0, 1]; rounded
            up to whole blocks.
        batchnorm: ``"frozen"`` (default: every BatchNorm in inference mode, also in
            unfrozen blocks) or ``"trainable"`` (BatchNorm of unfrozen blocks trains and
            updates its moving statistics).
        layernorm: ``"trainable"`` (default: LayerNorm of unfrozen blocks trains) or
            ``"frozen"`` (every backbone LayerNorm keeps its gamma and beta).
        lr_decay: per-block learning-rate decay going down from the head (head 1, top
            block ``lr_decay``, next ``lr_decay**2``, ...), in (0, 1]. With one block per
            transformer layer this is the layer-wise decay of BEiT and DINOv2 fine-tuning
            (Bao et al., "BEiT", ICLR 2022, https://arxiv.org/abs/2106.08254): transformer
            layer ``i`` of ``L`` (0 at the bottom) learns at ``lr * lr_decay ** (L - i)``
            (0.65 to 0.75 is typical).
        lr_multipliers: explicit factors per block name (and optionally ``"head"``);
            unlisted trainable groups get 1.

    Raises:
        ValueError: neither or both of ``blocks`` and ``fraction``; ``blocks`` < 1 or
            ``fraction`` outside (0, 1]; bad ``batchnorm``, ``lr_decay`` or
            ``lr_multipliers``. At apply time: more blocks than the backbone has.
    """

    blocks: int | None = None
    fraction: float | None = None
    batchnorm: str = "frozen"
    lr_decay: float | None = None
    lr_multipliers: Mapping[str, float] | None = None
    layernorm: str = "trainable"

    def __post_init__(self) -> None:
        problems = _check_batchnorm(self.batchnorm, self.layernorm)
        problems += _check_lr_options(self.lr_decay, self.lr_multipliers)
        if (self.blocks is None) == (self.fraction is None):
            problems.append("give exactly one of blocks=N or fraction=f")
        elif self.blocks is not None and (
            isinstance(self.blocks, bool) or not isinstance(self.blocks, int) or self.blocks < 1
        ):
            problems.append(
                f"blocks must be an integer >= 1 (use FreezeBackbone() for none), got "
                f"{self.blocks!r}"
            )
        elif self.fraction is not None and not (
            isinstance(self.fraction, (int, float)) and 0 < self.fraction <= 1
        ):
            problems.append(f"fraction must be in (0, 1], got {self.fraction!r}")
        _raise_if(problems, "UnfreezeTop")

    def trainable_blocks(self, block_names: tuple[str, ...]) -> tuple[str, ...]:
        n = len(block_names)
        count = self.blocks if self.blocks is not None else math.ceil(self.fraction * n - 1e-9)
        if count > n:
            raise InvalidValueError(
                f"UnfreezeTop(blocks={count}) asks for more blocks than the backbone has ({n}: "
                f"{', '.join(block_names)}); use blocks <= {n} or FullFineTune()."
            )
        return tuple(block_names[n - count :])


@dataclasses.dataclass(frozen=True)
class FullFineTune(Policy):
    """Trains every block and the head.

    Args:
        batchnorm: ``"frozen"`` (default, inference-mode BatchNorm everywhere) or
            ``"trainable"``.
        layernorm: ``"trainable"`` (default) or ``"frozen"``, as :class:`UnfreezeTop`.
        lr_decay: per-block learning-rate decay, as :class:`UnfreezeTop` (the layer-wise
            decay of BEiT / DINOv2 fine-tuning with one block per transformer layer).
        lr_multipliers: per-block learning-rate factors, as :class:`UnfreezeTop`.

    Raises:
        ValueError: bad ``batchnorm``, ``lr_decay`` or ``lr_multipliers``.
    """

    batchnorm: str = "frozen"
    lr_decay: float | None = None
    lr_multipliers: Mapping[str, float] | None = None
    layernorm: str = "trainable"

    def __post_init__(self) -> None:
        problems = _check_batchnorm(self.batchnorm, self.layernorm)
        problems += _check_lr_options(self.lr_decay, self.lr_multipliers)
        _raise_if(problems, "FullFineTune")

    def trainable_blocks(self, block_names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(block_names)


POLICIES: dict[str, type[Policy]] = {
    cls.__name__: cls for cls in (FreezeBackbone, UnfreezeTop, FullFineTune)
}


def policy_from_config(config: Mapping[str, Any]) -> Policy:
    """The policy that :meth:`Policy.get_config` described.

    Raises:
        ValueError: unknown policy class or fields.
    """
    name = config.get("class_name")
    if name not in POLICIES:
        raise InvalidValueError(f"Unknown policy {name!r}; expected one of {sorted(POLICIES)}.")
    cls = POLICIES[name]
    fields = dict(config.get("config", {}))
    unknown = set(fields) - {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if unknown:
        raise InvalidValueError(f"{name} has no fields {sorted(unknown)}.")
    return cls(**fields)


# -- optimizers with per-variable learning-rate multipliers ----------------------------------


class _ScaledLearningRate:
    """Mixin for a Keras optimizer: ``learning_rate * multiplier[variable]`` per variable.

    Adam's step is ``lr * m_hat / (sqrt(v_hat) + eps)``, invariant to the gradient's
    scale, so per-block learning rates have to scale ``lr`` itself (as PyTorch's
    parameter groups do). The multiplier is looked up at trace time from the variable's
    index, so it is a constant under ``jit_compile`` and needs no extra state; the
    optimizer's slots, iterations and schedule are the wrapped optimizer's own. Decoupled
    weight decay (AdamW, ``weight_decay=``) is scaled too, as it is per parameter group in
    PyTorch.

    Args:
        lr_multipliers: variable path -> factor; variables not listed get 1.
    """

    def __init__(
        self, *args: Any, lr_multipliers: Mapping[str, float] | None = None, **kwargs: Any
    ):
        super().__init__(*args, **kwargs)
        self.lr_multipliers = {str(k): float(v) for k, v in (lr_multipliers or {}).items()}
        self._scales: tuple[float, ...] = ()

    def build(self, var_list: list[keras.Variable]) -> None:
        if self.built:
            return
        paths = {v.path for v in var_list}
        missing = sorted(set(self.lr_multipliers) - paths)
        if missing:
            raise InvalidValueError(
                f"The optimizer's learning-rate multipliers name {len(missing)} variables that "
                f"are not being trained (e.g. {missing[:3]}): the policy or the model changed "
                "after make_optimizer. Apply the policy, then call make_optimizer and compile."
            )
        super().build(var_list)
        self._scales = tuple(self.lr_multipliers.get(v.path, 1.0) for v in var_list)

    def _scale(self, variable: Any) -> float:
        return self._scales[self._get_variable_index(variable)]

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> Any:
        scale = self._scale(variable)
        if scale != 1.0:
            learning_rate = learning_rate * scale
        return super().update_step(gradient, variable, learning_rate)

    def _apply_weight_decay(self, variables: list[Any]) -> None:
        if self.weight_decay is None:
            return
        by_scale: dict[float, list[Any]] = {}
        for variable in variables:
            by_scale.setdefault(self._scale(variable), []).append(variable)
        base = self.weight_decay
        try:  # the backend's own (distribution-aware) decay, once per multiplier
            for scale, group in by_scale.items():
                self.weight_decay = base * scale
                super()._apply_weight_decay(group)
        finally:
            self.weight_decay = base

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["lr_multipliers"] = dict(self.lr_multipliers)
        return config


@keras.saving.register_keras_serializable(package="zoo")
class ScaledAdam(_ScaledLearningRate, keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with per-variable learning-rate multipliers."""


@keras.saving.register_keras_serializable(package="zoo")
class ScaledAdamW(_ScaledLearningRate, keras.optimizers.AdamW):
    """``keras.optimizers.AdamW`` with per-variable learning-rate (and decay) multipliers."""


@keras.saving.register_keras_serializable(package="zoo")
class ScaledSGD(_ScaledLearningRate, keras.optimizers.SGD):
    """``keras.optimizers.SGD`` with per-variable learning-rate multipliers."""


OPTIMIZERS: dict[str, type[keras.optimizers.Optimizer]] = {
    "adam": ScaledAdam,
    "adamw": ScaledAdamW,
    "sgd": ScaledSGD,
}


def variable_multipliers(model: keras.Model, policy: Policy | None) -> dict[str, float]:
    """Variable path -> learning-rate multiplier for the model's trainable weights.

    Only factors other than 1 are listed.

    Raises:
        ValueError: a trainable variable lies in a block the policy freezes (the policy
            was not applied), or two trainable variables share a path.
    """
    if policy is None:
        return {}
    spec = backbone_spec(model)
    multipliers = policy.multipliers(spec)
    trainable = _trainable_ids(model)
    out: dict[str, float] = {}
    stray: list[str] = []
    paths: list[str] = []
    for group, weights in variable_groups(model).items():
        for w in weights:
            if id(w) not in trainable:
                continue
            paths.append(w.path)
            if group not in multipliers:
                stray.append(w.path)
            elif multipliers[group] != 1.0:
                out[w.path] = multipliers[group]
    if stray:
        raise InvalidValueError(
            f"{len(stray)} trainable variables (e.g. {stray[:3]}) lie in blocks that "
            f"{policy.describe()} freezes; call policy.apply(model) before make_optimizer."
        )
    dupes = sorted({p for p in paths if paths.count(p) > 1}) if len(set(paths)) < len(paths) else []
    if dupes:
        raise InvalidValueError(f"Trainable variables share paths {dupes[:3]}; rename the layers.")
    return out


def make_optimizer(
    name: str,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
    model: keras.Model,
    policy: Policy | None = None,
    **optimizer_kwargs: Any,
) -> keras.optimizers.Optimizer:
    """An optimizer honouring the policy's per-block learning-rate multipliers.

    Each trainable variable's step uses ``learning_rate * multiplier`` of its block
    (``"head"``: 1), the way fastai's discriminative learning rates / PyTorch parameter
    groups do, inside one ordinary Keras optimizer (:class:`ScaledAdam`,
    :class:`ScaledAdamW` or :class:`ScaledSGD`): it works with learning-rate schedules,
    ``model.fit``, ``jit_compile``, and is saved and restored with the model (the
    multipliers are in its config, keyed by variable path).

    Call it after ``policy.apply(model)``, then ``model.compile(optimizer=...)``.

    Args:
        name: ``"adam"``, ``"adamw"`` or ``"sgd"``.
        learning_rate: the head's learning rate, a float or a Keras schedule.
        model: a classifier (see :func:`zoo.build_classifier`) the policy was applied to.
        policy: the applied policy; ``None`` gives every variable the same rate.
        **optimizer_kwargs: passed to the Keras optimizer (``weight_decay``,
            ``momentum``, ``clipnorm``, ``epsilon``, ...).

    Raises:
        ValueError: unknown optimizer name, a bad learning rate, a policy that was not
            applied to the model, or a model with no ``"backbone"``.
    """
    key = str(name).lower()
    if key not in OPTIMIZERS:
        raise InvalidValueError(
            f"Unknown optimizer {name!r}; expected one of {sorted(OPTIMIZERS)}."
        )
    if isinstance(learning_rate, (int, float)) and not (
        math.isfinite(learning_rate) and learning_rate > 0
    ):
        raise InvalidValueError(f"learning_rate must be a positive number, got {learning_rate!r}.")
    multipliers = variable_multipliers(model, policy)
    return OPTIMIZERS[key](
        learning_rate=learning_rate, lr_multipliers=multipliers, **optimizer_kwargs
    )
