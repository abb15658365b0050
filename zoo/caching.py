"""Frozen-prefix activation caching: one mechanism for any cut at a block boundary.

A fine-tuning stage that leaves the bottom of the backbone frozen (BatchNorm in inference
mode, no augmentation, nothing stochastic active there) recomputes a fixed function of the
input every epoch under plain ``fit``. This module splits a classifier (``preprocess`` ->
``backbone`` -> ``head``, see ``zoo.classifier``) at a block boundary named by the
backbone's :class:`zoo.registry.BackboneSpec` into

* a frozen **prefix** (``preprocess`` and the backbone's layers up to the cut), run once in
  inference mode over the data, its activations stored in memory or, past a byte budget,
  in a ``numpy`` memmap on disk; and
* a trainable **suffix** (the rest of the backbone and the head): a functional sub-graph
  that reuses the full model's layers, so training it trains the full model.

The cut at the backbone's last layer is the classic head-only "bottleneck" cache (TF1's
``retrain.py``); a cut lower down caches the frozen prefix of a top-blocks fine-tune.

Imports TensorFlow (tf.data, ``tf.function``) inside functions only.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from zoo.errors import InvalidValueError

log = logging.getLogger("zoo.training")

CACHE_DTYPES = ("float32", "bfloat16", "float16")
DEFAULT_CACHE_BUDGET_BYTES = 2 * 1024**3

# Layers that draw random numbers in training mode, and the attribute that switches them off.
_STOCHASTIC_ATTRS = ("rate", "stddev")

# Layer classes whose output does not depend on ``training`` once the static checks of
# :func:`plan_cut` hold (BatchNorm non-trainable, stochastic layers at strength 0). Exact
# types only: a subclass may override ``call``. Any other layer below the cut is probed.
_MODE_FREE_LAYERS = tuple(
    getattr(keras.layers, name)
    for name in (
        "InputLayer", "Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "SeparableConv2D",
        "Conv2DTranspose", "Dense", "EinsumDense", "Activation", "ReLU", "ELU", "LeakyReLU",
        "PReLU", "Softmax", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum",
        "Concatenate", "ZeroPadding2D", "Cropping2D", "MaxPooling2D", "AveragePooling2D",
        "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Reshape", "Flatten", "Permute",
        "Identity", "Rescaling", "Normalization", "BatchNormalization", "LayerNormalization",
        "Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout",
    )
    if hasattr(keras.layers, name)
)  # fmt: skip


@dataclass
class CacheInfo:
    """What the cache did in one stage (JSON-able via :meth:`to_dict`).

    Attributes:
        used: whether the stage trained the suffix on cached activations.
        reason: why not (the first condition that failed), or a short description of the
            cut when used.
        cut: the block whose end is the cut (``None`` when no cut was valid); the last
            block means the backbone's output (head-only cache).
        cut_layer: the backbone layer whose output is cached.
        location: ``"memory"`` or the directory of the on-disk memmap; ``None`` if unused.
        location_reason: why the cache lives where it does.
        size_bytes: bytes of the stored activations (train + validation).
        shape: activation shape per example, ``(h', w', channels)``.
        dtype: storage dtype; anything but float32 makes results approximate.
        exact: False when activations were stored in a reduced precision.
        build_seconds: wall time to compute (or load) the activations.
        pass_seconds: wall time of one pass from pixels to the cut over the training and
            validation data, measured when the activations were computed (in this stage,
            an earlier one, or the run that wrote them to disk): what each epoch would
            spend on the prefix without the cache.
        key: sha256 of what the activations depend on (backbone, weights, cut, input
            size, data fingerprint, dtype).
        reused: the activations came from an earlier stage or an earlier run.
        derived_from: the lower block whose cached activations these were computed from
            (kept for the next stage, which caches there), or None.
    """

    used: bool = False
    reason: str = ""
    cut: str | None = None
    cut_layer: str | None = None
    location: str | None = None
    location_reason: str = ""
    size_bytes: int = 0
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    exact: bool = True
    build_seconds: float = 0.0
    pass_seconds: float = 0.0
    key: str | None = None
    reused: bool = False
    derived_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the fields."""
        d = asdict(self)
        d["shape"] = list(self.shape) if self.shape else None
        return d


@dataclass
class CutPlan:
    """A valid split of a classifier at a block boundary.

    Attributes:
        block: name of the block whose end is the cut.
        layer: name of the backbone layer whose output is cached.
        prefix_layers: the backbone layers at or below the cut (plus outer layers before
            the backbone), all frozen.
        is_backbone_output: the cut is the backbone's output (head-only cache).
    """

    block: str
    layer: str
    prefix_layers: list[Any] = field(repr=False)
    is_backbone_output: bool = False


class CacheUnavailable(Exception):
    """Raised internally when caching is not valid; the message is the reason."""


# ----------------------------------------------------------------------------- structure


def backbone_blocks(model: keras.Model) -> tuple[Any, ...]:
    """The :class:`zoo.registry.Block` s of ``model``'s backbone, bottom to top.

    Looks the backbone up through ``zoo.classifier.classifier_info``; a bare model with a
    ``zoo_blocks`` attribute (a sequence of Blocks) works too.

    Raises:
        CacheUnavailable: the blocks cannot be found.
    """
    blocks = getattr(model, "zoo_blocks", None)
    if blocks:
        return tuple(blocks)
    try:
        from zoo.classifier import classifier_info
        from zoo.registry import get_spec

        return get_spec(classifier_info(model)["backbone"]).blocks
    except Exception as err:  # any failure means "no blocks known"
        raise CacheUnavailable(
            f"the backbone's blocks are unknown ({type(err).__name__}: {err}); build the model "
            "with zoo.build_classifier"
        ) from None


def _backbone(model: keras.Model) -> keras.Model:
    try:
        return model.get_layer("backbone")
    except ValueError:
        raise CacheUnavailable("the model has no layer named 'backbone'") from None


def _outer_backbone_node(model: keras.Model, backbone: keras.Model) -> Any:
    """The node where ``model``'s own graph calls ``backbone`` (not its internal one)."""
    own = {id(t) for t in backbone.outputs}
    nodes = [n for n in backbone._inbound_nodes if not {id(t) for t in n.output_tensors} <= own]
    if len(nodes) != 1:
        raise CacheUnavailable(
            f"the backbone is called {len(nodes)} times in the model; expected exactly once"
        )
    return nodes[0]


def _variable_ids(layers: Sequence[Any]) -> set[int]:
    return {id(v) for layer in layers for v in layer.variables}


def _stochastic(layer: Any) -> bool:
    """Whether ``layer`` draws random numbers in training mode with a non-zero strength."""
    if not hasattr(layer, "seed_generator"):
        return False
    strengths = [getattr(layer, a) for a in _STOCHASTIC_ATTRS if hasattr(layer, a)]
    # A random layer without a known strength attribute counts as active.
    return not strengths or any(float(s or 0.0) > 0 for s in strengths)


def _is_batchnorm(layer: Any) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


def plan_cut(model: keras.Model, blocks: Sequence[Any] | None = None) -> CutPlan:
    """Finds the highest block boundary below which caching is valid.

    Valid means: every variable of the outer layers before the backbone and of the
    backbone layers up to the block's end is frozen (not in ``model.trainable_variables``),
    every BatchNorm there is non-trainable (so Keras runs it in inference mode), and no
    stochastic layer (Dropout, GaussianNoise, ...) there is active. Blocks with
    ``cut=False`` are skipped.

    Args:
        model: a classifier with layers ``backbone`` and ``head``.
        blocks: the backbone's blocks; default :func:`backbone_blocks`.

    Returns:
        The :class:`CutPlan`.

    Raises:
        CacheUnavailable: no block boundary is valid; the message says why the lowest
            candidate failed.
    """
    backbone = _backbone(model)
    blocks = tuple(blocks) if blocks is not None else backbone_blocks(model)
    layers = backbone.layers
    index = {layer.name: i for i, layer in enumerate(layers)}
    missing = [b.end for b in blocks if b.end not in index]
    if missing:
        raise CacheUnavailable(f"block end layers not in the backbone: {missing}")
    outer = model.layers[: model.layers.index(backbone)]
    trainable = {id(v) for v in model.trainable_variables}
    reason = "no block boundary can be cut"
    for block in reversed(blocks):
        if not block.cut:
            continue
        prefix = [*outer, *layers[: index[block.end] + 1]]
        reason = _prefix_problem(prefix, trainable, block.name)
        if reason is None:
            return CutPlan(
                block=block.name,
                layer=block.end,
                prefix_layers=prefix,
                is_backbone_output=index[block.end] == len(layers) - 1,
            )
    raise CacheUnavailable(reason)


def _prefix_problem(prefix: Sequence[Any], trainable: set[int], block: str) -> str | None:
    """Why the layers of ``prefix`` cannot be cached, or None if they can."""
    train_vars = [v.path for layer in prefix for v in layer.variables if id(v) in trainable]
    if train_vars:
        return (
            f"trainable variables below the cut at block {block!r}: "
            f"{', '.join(train_vars[:3])}{' ...' if len(train_vars) > 3 else ''}"
        )
    bn = [layer.name for layer in prefix if _is_batchnorm(layer) and layer.trainable]
    if bn:
        return f"BatchNorm in training mode below the cut at block {block!r}: {bn[:3]}"
    noisy = [layer.name for layer in prefix if _stochastic(layer)]
    if noisy:
        return f"stochastic layers active below the cut at block {block!r}: {noisy[:3]}"
    return None


@contextmanager
def frozen_layers_in_inference(model: keras.Model) -> Iterator[list[str]]:
    """Switches off stochastic layers (Dropout, stochastic depth, noise) that are frozen.

    Keras runs a non-trainable BatchNorm in inference mode but leaves a non-trainable
    Dropout active under ``fit``. Inside this context a non-trainable stochastic layer has
    its ``rate`` / ``stddev`` set to 0 (restored on exit), so a frozen block behaves as in
    inference, as the Keras transfer-learning guide's ``base(x, training=False)`` does.
    Changes take effect at the next compile.

    Yields:
        The names of the layers switched off.
    """
    saved: list[tuple[Any, str, Any]] = []
    try:
        for layer in all_layers(model):
            if layer.trainable or not _stochastic(layer):
                continue
            for attr in _STOCHASTIC_ATTRS:
                if hasattr(layer, attr):
                    saved.append((layer, attr, getattr(layer, attr)))
                    setattr(layer, attr, 0.0)
        yield [layer.name for layer, _, _ in saved]
    finally:
        for layer, attr, value in saved:
            setattr(layer, attr, value)


def all_layers(model: Any) -> Iterator[Any]:
    """Every layer nested in ``model`` (depth first), not ``model`` itself."""
    for layer in getattr(model, "layers", []):
        yield layer
        if hasattr(layer, "layers"):
            yield from all_layers(layer)


@dataclass
class SplitModel:
    """The two halves of a classifier split at a cut; both share the full model's layers.

    Attributes:
        prefix: ``(batch, h, w, 3)`` pixels -> ``(batch, h', w', c)`` activations at the cut.
        suffix: activations at the cut -> logits, sharing variables with the full model.
    """

    prefix: keras.Model
    suffix: keras.Model


def split_model(model: keras.Model, plan: CutPlan) -> SplitModel:
    """Builds the prefix and suffix models of ``model`` at ``plan``'s cut.

    Raises:
        CacheUnavailable: the graph cannot be split there (a later layer reads a tensor
            from below the cut).
    """
    backbone = _backbone(model)
    node = _outer_backbone_node(model, backbone)
    outer_in = node.input_tensors[0]
    outer_out = node.output_tensors[0]
    cut_tensor = backbone.get_layer(plan.layer).output
    try:
        before = keras.Model(model.inputs, outer_in, name="zoo_before_backbone")
        bottom = keras.Model(backbone.inputs, cut_tensor, name="zoo_backbone_bottom")
        after = keras.Model(outer_out, model.outputs[0], name="zoo_after_backbone")
        top = None
        if not plan.is_backbone_output:
            top = keras.Model(cut_tensor, backbone.outputs[0], name="zoo_backbone_top")
    except ValueError as err:
        raise CacheUnavailable(f"the graph cannot be split at {plan.layer!r}: {err}") from None
    pixels = keras.Input(model.inputs[0].shape[1:], dtype=model.inputs[0].dtype)
    prefix = keras.Model(pixels, bottom(before(pixels)), name="zoo_prefix")
    feats = keras.Input(cut_tensor.shape[1:], name="cached_activations")
    out = after(top(feats) if top is not None else feats)
    suffix = keras.Model(feats, out, name="zoo_suffix")
    # The suffix must own exactly the full model's trainable variables, the same objects.
    want = {id(v) for v in model.trainable_variables}
    got = {id(v) for v in suffix.trainable_variables}
    if want != got:
        raise CacheUnavailable(
            f"the suffix at {plan.layer!r} does not share the model's trainable variables "
            f"({len(got & want)} of {len(want)} shared)"
        )
    return SplitModel(prefix=prefix, suffix=suffix)


def middle_model(model: keras.Model, lower: CutPlan, upper: CutPlan) -> keras.Model:
    """The backbone's layers between two cuts: activations at ``lower`` -> at ``upper``.

    Running it on the activations at ``lower`` gives those at ``upper`` without running
    the layers below ``lower`` again (a cache at ``upper`` derived from one at ``lower``).

    Raises:
        CacheUnavailable: ``lower`` is not below ``upper``, or the graph cannot be split
            there (a layer above ``lower`` reads a tensor from below it).
    """
    if len(lower.prefix_layers) >= len(upper.prefix_layers):
        raise CacheUnavailable(f"the cut at {lower.layer!r} is not below {upper.layer!r}")
    backbone = _backbone(model)
    try:
        return keras.Model(
            backbone.get_layer(lower.layer).output,
            backbone.get_layer(upper.layer).output,
            name="zoo_backbone_middle",
        )
    except ValueError as err:
        raise CacheUnavailable(
            f"the graph cannot be split between {lower.layer!r} and {upper.layer!r}: {err}"
        ) from None


def layers_to_probe(plan: CutPlan) -> list[str]:
    """Names of the prefix layers whose training-mode behaviour zoo cannot vouch for.

    Keras' own stateless and convolution layers, frozen BatchNorm and switched-off
    stochastic layers compute the same in both modes (:func:`plan_cut` checked the last
    two); zoo's :class:`~zoo.preprocessing.Preprocess` too. Anything else (a custom layer
    that reads ``training``) must pass :func:`probe_prefix` before the prefix is cached.
    """
    from zoo.preprocessing import Preprocess

    known = (*_MODE_FREE_LAYERS, Preprocess)
    return [layer.name for layer in plan.prefix_layers if type(layer) not in known]


def probe_prefix(prefix: keras.Model, images: np.ndarray) -> str | None:
    """Checks that the prefix is the same function in training and inference mode.

    Runs the prefix on ``images`` with ``training=True`` twice and ``training=False`` once;
    any difference means a layer below the cut depends on the mode (training runs it only
    for the layers :func:`layers_to_probe` names). Seed-generator states are restored
    afterwards so the probe leaves no trace.

    Returns:
        None when all three agree bitwise, else the reason.
    """
    states = [(v, np.array(v)) for v in prefix.variables if "seed_generator" in v.path]
    try:
        a = np.asarray(prefix(images, training=True))
        b = np.asarray(prefix(images, training=True))
        c = np.asarray(prefix(images, training=False))
    finally:
        for v, value in states:
            v.assign(value)
    if not (np.array_equal(a, b) and np.array_equal(a, c)):
        return (
            "the prefix differs between training and inference mode (a stochastic or "
            "batch-statistics layer is active below the cut)"
        )
    return None


# ----------------------------------------------------------------------------- keys


def prefix_key(
    model: keras.Model,
    plan: CutPlan,
    input_size: tuple[int, ...],
    data_fingerprint: str | None,
    dtype: str,
) -> str:
    """sha256 naming the activations: backbone, weights, cut, input size, data, dtype.

    The weights are hashed from the prefix's variables (not only the recorded file hash:
    an earlier stage may have trained them).
    """
    h = hashlib.sha256()
    for layer in plan.prefix_layers:
        for v in layer.variables:
            h.update(v.path.encode())
            h.update(np.ascontiguousarray(np.asarray(v)).tobytes())
    backbone = _backbone(model)
    ident = {
        "backbone": backbone.name,
        "weights_file_sha256": (getattr(backbone, "zoo_weights", None) or {}).get("sha256"),
        "prefix_sha256": h.hexdigest(),
        "cut": plan.layer,
        "input_size": list(input_size),
        "data": data_fingerprint,
        "dtype": dtype,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------- storage


@dataclass
class Activations:
    """Cached activations of one split: ``x`` (N, h', w', c) and labels ``y`` (N, ...).

    ``x`` is an in-memory array or a read-only ``numpy`` memmap, its rows in the order the
    dataset yielded them. ``canonical`` lists the rows sorted by :func:`example_keys`, an
    order that does not depend on how the dataset shuffled this time; shuffled training
    permutes it, so a cache built in another process (a resumed run) gives the same batches.
    None means the stored order. ``seconds`` is the wall time one pass of the prefix over
    the data took when the cache was computed (kept with an on-disk cache): what every
    epoch of plain training would spend on it.
    """

    x: np.ndarray
    y: np.ndarray
    location: str
    batch_size: int = 0
    canonical: np.ndarray | None = None
    seconds: float = 0.0

    @property
    def nbytes(self) -> int:
        return int(self.x.nbytes + self.y.nbytes)


def _numpy_dtype(name: str) -> Any:
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(name)


def example_keys(pixels: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each example's input bytes and label, shape ``(batch,)`` uint64.

    Sorting by it gives the examples an order of their own, whatever order a shuffled
    dataset yielded them in (identical examples tie, and their activations are identical).
    """
    pixels = np.ascontiguousarray(pixels)
    labels = np.ascontiguousarray(labels)
    keys = np.empty(len(pixels), np.uint64)
    for i in range(len(pixels)):
        h = hashlib.blake2b(pixels[i].tobytes(), digest_size=8)
        h.update(labels[i].tobytes())
        keys[i] = int.from_bytes(h.digest(), "little")
    return keys


def _without_autotune(dataset: Any) -> Any:
    """``dataset`` with tf.data's autotuning off.

    Autotuning (and the prefetch tf.data injects under it) runs a model thread that the
    iterator's deletion waits for: up to 5 s per pass measured on a 2-core CPU, longer
    than the whole pass on small datasets. A single pass gains nothing from tuning, nor
    does a pipeline of trivial steps; parallel calls set to ``AUTOTUNE`` then use
    ``min(16, cores)`` threads. Element order and any shuffle seed are the dataset's
    own: the options wrap it.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def _forward_fn(prefix: keras.Model, tf_dtype: Any, jit_compile: bool) -> Any:
    """A ``tf.function`` running ``prefix`` in inference mode, traced once per prefix."""
    import tensorflow as tf

    cache = prefix.__dict__.setdefault("_zoo_forward", {})
    key = (tf_dtype.name, jit_compile)
    if key not in cache:

        @tf.function(jit_compile=jit_compile, reduce_retracing=True)
        def forward(x: Any) -> Any:
            return tf.cast(prefix(x, training=False), tf_dtype)

        cache[key] = forward
    return cache[key]


def compute_activations(
    prefix: keras.Model,
    dataset: Any,
    *,
    dtype: str = "float32",
    budget_bytes: int = DEFAULT_CACHE_BUDGET_BYTES,
    disk_dir: Path | None = None,
    jit_compile: bool = False,
    verbose: int = 1,
    label: str = "train",
) -> Activations:
    """Runs ``prefix`` once in inference mode over ``dataset`` and stores its outputs.

    Args:
        prefix: pixels -> activations model.
        dataset: batched ``tf.data.Dataset`` of ``(pixels, labels)``; extra elements
            (sample weights) are not supported.
        dtype: storage dtype, one of ``CACHE_DTYPES``.
        budget_bytes: activations above this size go to ``disk_dir`` as a memmap.
        disk_dir: where an over-budget cache is written (created). Required to spill.
        jit_compile: compile the forward pass with XLA.
        verbose: 1 shows a progress bar.
        label: split name for the progress bar and file names.

    Returns:
        The :class:`Activations`; labels are kept in memory, ``canonical`` is set.

    Raises:
        ValueError: the dataset does not yield ``(pixels, labels)`` pairs or the dtype is
            unknown.
        CacheUnavailable: over budget without a ``disk_dir``.
    """
    forward = _forward_fn(prefix, _tf_dtype(dtype), jit_compile)
    np_dtype = _numpy_dtype(dtype)
    keys: list[np.ndarray] = []

    def outputs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for element in _without_autotune(dataset):
            if not isinstance(element, tuple) or len(element) != 2:
                raise InvalidValueError(
                    "Caching needs a dataset of (pixels, labels) pairs; got elements of "
                    f"{dataset.element_spec}. Drop sample weights or set cache='off'."
                )
            y = np.asarray(element[1])
            keys.append(example_keys(np.asarray(element[0]), y))
            yield np.asarray(forward(element[0])).astype(np_dtype, copy=False), y

    def canonical() -> np.ndarray:
        return np.argsort(
            np.concatenate(keys) if keys else np.zeros((0,), np.uint64), kind="stable"
        )

    store = _Store(dtype, budget_bytes, disk_dir, label)
    batches = int(dataset.cardinality())
    return store.run(outputs(), canonical, batches if batches > 0 else None, verbose)


def derive_activations(
    middle: keras.Model,
    base: Activations,
    *,
    dtype: str = "float32",
    budget_bytes: int = DEFAULT_CACHE_BUDGET_BYTES,
    disk_dir: Path | None = None,
    jit_compile: bool = False,
    verbose: int = 1,
    label: str = "train",
) -> Activations:
    """Activations at a higher cut, computed from ``base`` (those at a lower one).

    Runs ``middle`` (:func:`middle_model`) in inference mode over ``base.x`` in its
    stored order and batch size, so the result holds what :func:`compute_activations`
    would for the higher cut (same rows, labels and canonical order) without running the
    layers below the lower cut again.

    Args:
        middle: activations at the lower cut -> activations at the higher cut.
        base: the activations at the lower cut.
        dtype, budget_bytes, disk_dir, jit_compile, verbose, label: as for
            :func:`compute_activations`.

    Returns:
        The :class:`Activations`; ``seconds`` counts ``base.seconds`` too (a pass from
        pixels to the higher cut).

    Raises:
        CacheUnavailable: over budget without a ``disk_dir``.
    """
    forward = _forward_fn(middle, _tf_dtype(dtype), jit_compile)
    np_dtype = _numpy_dtype(dtype)
    step = base.batch_size or 32

    def outputs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(base.x), step):
            x = np.asarray(base.x[start : start + step], np.float32)
            out = np.asarray(forward(x)).astype(np_dtype, copy=False)
            yield out, base.y[start : start + step]

    def canonical() -> np.ndarray:
        return base.canonical if base.canonical is not None else np.arange(len(base.x))

    store = _Store(dtype, budget_bytes, disk_dir, label, earlier_seconds=base.seconds)
    return store.run(outputs(), canonical, -(-len(base.x) // step), verbose)


def _tf_dtype(name: str) -> Any:
    import tensorflow as tf

    if name not in CACHE_DTYPES:
        raise InvalidValueError(f"cache_dtype must be one of {CACHE_DTYPES}, got {name!r}.")
    return tf.as_dtype(name)


@dataclass
class _Store:
    """Collects batches of activations in memory, spilling to a memmap past the budget.

    ``earlier_seconds`` is added to the pass's own time (a derived cache's base pass).
    """

    dtype: str
    budget_bytes: int
    disk_dir: Path | None
    label: str
    earlier_seconds: float = 0.0

    def run(
        self,
        outputs: Iterator[tuple[np.ndarray, np.ndarray]],
        canonical: Any,
        batches: int | None,
        verbose: int,
    ) -> Activations:
        """Stores every ``(activations, labels)`` batch of ``outputs``; times the pass.

        ``canonical()`` is called after the last batch. A spilled cache is complete on
        disk (its ``.json`` written last) before this returns.
        """
        start = time.perf_counter()
        bar = keras.utils.Progbar(batches, unit_name="batch")
        if verbose:
            print(f"Caching activations ({self.label}):")
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        spill = None  # open file once over budget
        held = count = first = 0
        out = np.zeros((0,), _numpy_dtype(self.dtype))
        for i, (out, y) in enumerate(outputs):
            ys.append(y)
            first = first or len(out)
            count += len(out)
            if spill is None and held + out.nbytes > self.budget_bytes:
                spill = self._open_spill(xs)
                xs.clear()
            if spill is None:
                xs.append(out)
                held += out.nbytes
            else:
                spill.write(np.ascontiguousarray(out).tobytes())
            if verbose:
                bar.update(i + 1)
        y = np.concatenate(ys) if ys else np.zeros((0,), np.int64)
        order = canonical()
        seconds = self.earlier_seconds + time.perf_counter() - start
        if spill is None:
            x = np.concatenate(xs) if xs else out
            return Activations(x, y, "memory", first, order, seconds)
        spill.close()
        return self._finish_spill((count, *out.shape[1:]), y, order, first, seconds)

    def _open_spill(self, held: list[np.ndarray]) -> Any:
        if self.disk_dir is None:
            raise CacheUnavailable(
                f"activations exceed the memory budget ({self.budget_bytes} bytes) and no "
                "cache directory is set"
            )
        self.disk_dir.mkdir(parents=True, exist_ok=True)
        spill = open(self.disk_dir / f"{self.label}.x.partial", "wb")  # noqa: SIM115
        for chunk in held:
            spill.write(np.ascontiguousarray(chunk).tobytes())
        return spill

    def _finish_spill(
        self,
        shape: tuple[int, ...],
        y: np.ndarray,
        canonical: np.ndarray,
        first: int,
        seconds: float,
    ) -> Activations:
        disk_dir, label = self.disk_dir, self.label
        os.replace(disk_dir / f"{label}.x.partial", disk_dir / f"{label}.x.bin")
        return _complete_on_disk(disk_dir, label, shape, self.dtype, y, canonical, first, seconds)


def _complete_on_disk(
    disk_dir: Path,
    label: str,
    shape: tuple[int, ...],
    dtype: str,
    y: np.ndarray,
    canonical: np.ndarray | None,
    batch_size: int,
    seconds: float = 0.0,
) -> Activations:
    """Writes labels, order and (last, marking the cache complete) the ``.json`` beside
    ``<label>.x.bin``; returns the activations opened as a read-only memmap."""
    np.save(disk_dir / f"{label}.y.npy", y)
    if canonical is not None:
        np.save(disk_dir / f"{label}.canonical.npy", canonical)
    meta = {"shape": list(shape), "dtype": dtype, "batch_size": batch_size, "seconds": seconds}
    (disk_dir / f"{label}.json").write_text(json.dumps(meta))
    x = np.memmap(disk_dir / f"{label}.x.bin", dtype=_numpy_dtype(dtype), mode="r", shape=shape)
    return Activations(x, y, str(disk_dir), batch_size, canonical, seconds)


def save_activations(acts: Activations, disk_dir: Path, label: str, dtype: str) -> Activations:
    """Writes ``acts`` to ``disk_dir`` as :func:`load_activations` reads it back.

    The ``.json`` is written last, so an interrupted write is never loaded. Returns the
    on-disk copy (a read-only memmap); ``acts.seconds`` is kept with it.
    """
    disk_dir.mkdir(parents=True, exist_ok=True)
    partial = disk_dir / f"{label}.x.partial"
    with open(partial, "wb") as f:
        for start in range(0, len(acts.x), 1024):  # chunks: ``x`` may be a large memmap
            f.write(np.ascontiguousarray(acts.x[start : start + 1024]).tobytes())
    os.replace(partial, disk_dir / f"{label}.x.bin")
    return _complete_on_disk(
        disk_dir, label, acts.x.shape, dtype, acts.y, acts.canonical, acts.batch_size, acts.seconds
    )


def load_activations(disk_dir: Path, label: str) -> Activations | None:
    """Opens a complete on-disk cache written by :func:`compute_activations`, or None."""
    meta_path = disk_dir / f"{label}.json"
    if not meta_path.exists():
        return None
    meta = json.loads(meta_path.read_text())
    x = np.memmap(
        disk_dir / f"{label}.x.bin",
        dtype=_numpy_dtype(meta["dtype"]),
        mode="r",
        shape=tuple(meta["shape"]),
    )
    y = np.load(disk_dir / f"{label}.y.npy")
    order_path = disk_dir / f"{label}.canonical.npy"
    canonical = np.load(order_path) if order_path.exists() else None
    batch_size, seconds = int(meta.get("batch_size", 0)), float(meta.get("seconds", 0.0))
    return Activations(x, y, str(disk_dir), batch_size, canonical, seconds)


def default_disk_dir(cache_dir: str | os.PathLike | None, key: str) -> tuple[Path, bool]:
    """Where an over-budget cache goes, and whether it is temporary (deleted after)."""
    if cache_dir is not None:
        return Path(cache_dir) / key[:16], False
    return Path(tempfile.mkdtemp(prefix="zoo-cache-")) / key[:16], True


def remove_dir(path: Path) -> None:
    """Deletes a temporary cache directory (and its temporary parent)."""
    shutil.rmtree(path.parent if path.parent.name.startswith("zoo-cache-") else path, True)


# ----------------------------------------------------------------------------- training data


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The example order of ``epoch``: a function of (seed, epoch) only, so resume is exact."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def cached_dataset(
    acts: Activations,
    batch_size: int,
    *,
    first_epoch: int,
    epochs: int | None,
    shuffle: bool,
    seed: int,
    label_transform: Any = None,
) -> Any:
    """Batches of ``(activations float32, labels)`` for epochs ``first_epoch..epochs-1``.

    ``epochs=None`` repeats without end (for ``fit`` with ``steps_per_epoch``).

    Each epoch's order is :func:`epoch_permutation` of the canonical order (or the stored
    order when ``shuffle`` is False); the last batch of an epoch may be smaller. Use with
    ``steps_per_epoch=ceil(N / batch_size)`` so Keras keeps one iterator across epochs.
    """
    import tensorflow as tf

    n = len(acts.x)
    steps = -(-n // batch_size)
    canonical = acts.canonical if shuffle and acts.canonical is not None else np.arange(n)

    def gen() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        # Training data is endless (Keras stops after ``epochs``; epoch e's order depends on
        # e only); evaluation data is one pass.
        for epoch in itertools.count(first_epoch) if epochs is None else range(first_epoch, epochs):
            order = epoch_permutation(n, seed, epoch) if shuffle else np.arange(n)
            for s in range(steps):
                # A batch holds its examples in canonical order (the sum of the gradients
                # depends on it), read in stored order (memmap reads stay sequential).
                rows = canonical[np.sort(order[s * batch_size : (s + 1) * batch_size])]
                by_row = np.argsort(rows)
                back = np.argsort(by_row)
                yield acts.x[rows[by_row]][back], acts.y[rows[by_row]][back]

    spec = (
        tf.TensorSpec((None, *acts.x.shape[1:]), tf.as_dtype(acts.x.dtype)),
        tf.TensorSpec((None, *acts.y.shape[1:]), tf.as_dtype(acts.y.dtype)),
    )
    ds = tf.data.Dataset.from_generator(gen, output_signature=spec)
    if epochs is not None:  # tells Keras the length, so it does not warn at the end
        ds = ds.apply(tf.data.experimental.assert_cardinality((epochs - first_epoch) * steps))
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y))
    if label_transform is not None:
        ds = ds.map(label_transform)
    # A fixed prefetch, no autotuning: its thread would stall the iterator's deletion at
    # the end of ``fit`` for seconds (0.4 to 9.8 s measured), and the maps are trivial.
    return _without_autotune(ds.prefetch(2))
