"""Weight manifests: per-variable path, shape, dtype, sha256 and frozen flag.

A manifest is a JSON-able record of every weight of a Keras model, trainable and
non-trainable alike: kernels, biases, BatchNorm gamma/beta and the moving mean and
variance. Each entry holds the sha256 of the variable's bytes (C order, in its own
dtype), so "unchanged" can be checked bitwise. Take one right after the pretrained
weights load (the *source* manifest), one after fine-tuning, and :func:`diff` names what
moved; :mod:`recipes.export` ships the final one inside the SavedModel and
:mod:`recipes.verify` re-checks it against a source outside the export (the registry's
pinned pretrained file, fingerprinted anew by :mod:`zoo.proof`, or a manifest the user
hands in).

Paths are structural, made of layer names below the root model and the variable's own
name, e.g. ``"backbone/block_1_project_BN/moving_variance"`` or ``"head/logits/kernel"``.
Keras' own ``Variable.path`` leaves out the enclosing nested model (``"Conv1/kernel"``)
and depends on the name scope the variable was built in; layer names are what a
``.keras`` file stores, so structural paths are the same across sessions and reloads
as long as layer names are explicit or built in a fresh naming scope (see
``zoo.backbones.fresh_layer_names``).

Frozen (see docs/architecture.md, "Frozen means frozen"): a variable is frozen when the layer that
owns it is non-trainable. A non-trainable BatchNormalization runs in inference mode, so
its moving statistics count as frozen too.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from zoo.errors import InvalidValueError, MissingFileError, ZooError
from zoo.files import write_text_atomic

MANIFEST_FORMAT = "zoo.manifest/1"
_ENTRY_KEYS = ("path", "shape", "dtype", "sha256", "frozen")


class ManifestError(ZooError, ValueError):
    """A manifest file or dict is malformed, or names variables a model does not have."""


def array_sha256(value: Any) -> str:
    """Hex sha256 of an array's bytes in C order and its own dtype.

    Args:
        value: a numpy array, a backend tensor or a Keras / TensorFlow variable.

    Returns:
        64 hex digits. Equal for two arrays exactly when their bytes are equal (shape
        and dtype are recorded separately in a manifest).
    """
    array = np.ascontiguousarray(_to_numpy(value))
    return hashlib.sha256(array.tobytes(order="C")).hexdigest()


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "numpy"):  # tf.Variable / tf.Tensor / torch tensors
        return np.asarray(value.numpy())
    return np.asarray(keras.ops.convert_to_numpy(value))


def _children(layer: Any) -> list[Any]:
    # Keras 3 keeps tracked sublayers (a functional model's layers, a custom layer's
    # attributes) behind this method; there is no public equivalent.
    return list(layer._flatten_layers(include_self=False, recursive=False))


def _walk(layer: Any, prefix: str, seen: set[int]) -> Iterator[tuple[str, Any, Any]]:
    """Yields ``(path, variable, owning_layer)``; sublayers first so the innermost owns."""
    for child in _children(layer):
        yield from _walk(child, f"{prefix}{child.name}/", seen)
    for variable in layer.weights:
        if id(variable) not in seen:
            seen.add(id(variable))
            yield f"{prefix}{variable.name}", variable, layer


def named_weights(model: keras.Layer) -> list[tuple[str, Any]]:
    """Every weight of ``model`` with its manifest path, sorted by path.

    Weights are ``model.weights``: trainable and non-trainable variables, without
    optimizer, metric or random-seed state.

    Returns:
        ``[(path, variable), ...]`` sorted by path. A path that would repeat (two
        variables of one layer with the same name) gets ``"#2"``, ``"#3"``, ... appended
        in creation order, so paths are unique.
    """
    return [(path, variable) for path, variable, _ in _owned_weights(model)]


def _owned_weights(model: keras.Layer) -> list[tuple[str, Any, Any]]:
    if not model.built:
        raise InvalidValueError(
            f"Model {model.name!r} is not built, so it has no weights yet; call it on a "
            "batch or build it before taking a manifest."
        )
    counts: dict[str, int] = {}
    rows = []
    for path, variable, owner in _walk(model, "", set()):
        counts[path] = counts.get(path, 0) + 1
        unique = path if counts[path] == 1 else f"{path}#{counts[path]}"
        rows.append((unique, variable, owner))
    return sorted(rows, key=lambda row: row[0])


def frozen_paths(model: keras.Layer) -> set[str]:
    """Paths of the weights whose owning layer is currently non-trainable.

    A non-trainable BatchNormalization runs in inference mode (Keras 3), so its moving
    mean and variance are frozen along with gamma and beta; a trainable one updates its
    moving statistics whenever it is called with ``training=True``, so none of its
    weights count as frozen. Setting ``trainable`` on an enclosing layer sets it on all
    its sublayers, so checking the owning layer is enough. One exception is a layer
    that trains some of its own weights only: a LoRA layer (``enable_lora``, see
    :mod:`zoo.lora`) trains its adapters while its base kernel and bias keep
    ``trainable=False``; a weight created trainable whose own flag is off is never
    updated, so it is frozen too (BatchNorm's moving statistics are created
    non-trainable and are not affected by this rule).

    Returns:
        A set of manifest paths (see :func:`named_weights`).
    """
    return {
        path
        for path, variable, owner in _owned_weights(model)
        if not owner.trainable or _switched_off(owner, variable)
    }


def _switched_off(owner: Any, variable: Any) -> bool:
    """A trainable-kind weight of ``owner`` whose own ``trainable`` flag is off."""
    return not variable.trainable and any(v is variable for v in owner._trainable_variables)


def layer_paths(model: keras.Layer, layer_name: str) -> set[str]:
    """Paths of every weight under the top-level layer ``layer_name`` (e.g. "backbone").

    Useful to state what a stage meant to freeze, independently of the trainable flags
    the model ended up with.

    Raises:
        ValueError: no top-level layer of that name.
    """
    names = [layer.name for layer in _children(model)]
    if layer_name not in names:
        raise InvalidValueError(
            f"Model {model.name!r} has no top-level layer {layer_name!r}; its layers are {names}."
        )
    return {path for path, _ in named_weights(model) if path.startswith(f"{layer_name}/")}


def manifest(model: keras.Layer, frozen: Iterable[str] | None = None) -> dict[str, Any]:
    """The weight manifest of ``model``.

    Args:
        model: a built Keras model or layer.
        frozen: manifest paths frozen in every training stage (e.g.
            ``FineTuneResult.frozen_in_all_stages``); default :func:`frozen_paths` of
            the model as it is now.

    Returns:
        ``{"format": "zoo.manifest/1", "digest": hex, "variables": [{"path", "shape",
        "dtype", "sha256", "frozen"}, ...]}`` with variables sorted by path. ``digest``
        is the sha256 of the paths, shapes, dtypes and hashes (not the frozen flags), so
        two manifests of the same weights have the same digest. Deterministic: the same
        weights give the same dict in every session.

    Raises:
        ManifestError: ``frozen`` names paths the model does not have.
        ValueError: the model is not built.
    """
    weights = named_weights(model)
    frozen_set = frozen_paths(model) if frozen is None else set(frozen)
    unknown = sorted(frozen_set - {path for path, _ in weights})
    if unknown:
        raise ManifestError(
            f"frozen names {len(unknown)} paths that {model.name!r} does not have, e.g. "
            f"{unknown[:3]}; pass manifest paths (see zoo.fingerprint.named_weights)."
        )
    entries = []
    for path, variable in weights:
        array = _to_numpy(variable)
        entries.append(
            {
                "path": path,
                "shape": [int(d) for d in array.shape],
                "dtype": array.dtype.name,
                "sha256": array_sha256(array),
                "frozen": path in frozen_set,
            }
        )
    return {"format": MANIFEST_FORMAT, "digest": _digest(entries), "variables": entries}


def _digest(entries: list[dict[str, Any]]) -> str:
    core = [[e["path"], list(e["shape"]), e["dtype"], e["sha256"]] for e in entries]
    return hashlib.sha256(json.dumps(core, separators=(",", ":")).encode()).hexdigest()


def digest(manifest_: dict[str, Any]) -> str:
    """Recomputes a manifest's digest from its entries (ignores the stored one)."""
    return _digest(check(manifest_)["variables"])


def entries(manifest_: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The manifest's entries keyed by path (in path order)."""
    return {entry["path"]: entry for entry in check(manifest_)["variables"]}


def frozen_set(manifest_: dict[str, Any]) -> set[str]:
    """Paths flagged frozen in a manifest."""
    return {path for path, entry in entries(manifest_).items() if entry["frozen"]}


def check(manifest_: Any) -> dict[str, Any]:
    """Validates a manifest's structure and returns it.

    Raises:
        ManifestError: wrong format tag, missing keys, duplicate paths; every problem
            is listed.
    """
    if not isinstance(manifest_, dict) or "variables" not in manifest_:
        raise ManifestError(
            f"Not a zoo weight manifest: expected a dict with 'format' and 'variables', got "
            f"{type(manifest_).__name__}. Make one with zoo.fingerprint.manifest(model)."
        )
    problems = []
    if manifest_.get("format") != MANIFEST_FORMAT:
        problems.append(f"format is {manifest_.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    seen: set[str] = set()
    for i, entry in enumerate(manifest_["variables"]):
        missing = [k for k in _ENTRY_KEYS if not isinstance(entry, dict) or k not in entry]
        if missing:
            problems.append(f"variables[{i}] lacks {missing}")
            continue
        if entry["path"] in seen:
            problems.append(f"path {entry['path']!r} appears twice")
        seen.add(entry["path"])
    if problems:
        raise ManifestError("Malformed weight manifest: " + "; ".join(problems) + ".")
    return manifest_


def prefixed(manifest_: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The same manifest with ``prefix`` put before every path (digest recomputed).

    Maps a bare model's manifest into the vocabulary of a model that nests it, e.g. a
    backbone's ``"stem_conv/kernel"`` to a classifier's ``"backbone/stem_conv/kernel"``.

    Raises:
        ManifestError: ``manifest_`` is not a manifest.
    """
    entries_ = [dict(e, path=prefix + e["path"]) for e in check(manifest_)["variables"]]
    entries_.sort(key=lambda e: e["path"])
    return {"format": MANIFEST_FORMAT, "digest": _digest(entries_), "variables": entries_}


def to_json(manifest_: dict[str, Any]) -> str:
    """Canonical JSON text: sorted keys, two-space indent, newline at the end."""
    return json.dumps(check(manifest_), sort_keys=True, indent=2) + "\n"


def save(manifest_: dict[str, Any], path: str | os.PathLike) -> Path:
    """Writes :func:`to_json` of ``manifest_`` to ``path`` atomically; returns the path."""
    return write_text_atomic(path, to_json(manifest_))


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a manifest written by :func:`save`.

    Raises:
        FileNotFoundError: no such file.
        ManifestError: not JSON, or not a manifest.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"No manifest file at {path}.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ManifestError(f"{path} is not JSON ({error}); expected a zoo manifest.") from None
    return check(data)


@dataclass(frozen=True)
class Change:
    """One variable present in both manifests whose bytes, shape or dtype differ."""

    path: str
    fields: tuple[str, ...]
    before: dict[str, Any] = field(repr=False)
    after: dict[str, Any] = field(repr=False)

    def describe(self) -> str:
        """E.g. ``backbone/bn/moving_variance: sha256 1a2b3c4d... -> 5e6f7a8b...``."""
        parts = [
            f"{name} {_short(self.before[name])} -> {_short(self.after[name])}"
            for name in self.fields
        ]
        return f"{self.path}: " + ", ".join(parts)


def _short(value: Any) -> str:
    return f"{value[:12]}..." if isinstance(value, str) and len(value) == 64 else str(value)


@dataclass(frozen=True)
class ManifestDiff:
    """What differs from manifest ``a`` to manifest ``b``.

    Attributes:
        added: paths only in ``b``.
        removed: paths only in ``a``.
        changed: variables in both whose sha256, shape or dtype differ.
        frozen_changed: paths in both whose frozen flag differs (values may be equal).
    """

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[Change, ...]
    frozen_changed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        """True when any variable was added, removed or changed."""
        return bool(self.added or self.removed or self.changed)

    @property
    def changed_paths(self) -> tuple[str, ...]:
        """Paths of :attr:`changed`, sorted."""
        return tuple(change.path for change in self.changed)

    def describe(self) -> str:
        """Lines naming every added, removed and changed variable ("no differences")."""
        if not self:
            return "no differences"
        lines = [f"added: {p}" for p in self.added] + [f"removed: {p}" for p in self.removed]
        return "\n".join(lines + [f"changed: {c.describe()}" for c in self.changed])


def diff(a: dict[str, Any], b: dict[str, Any]) -> ManifestDiff:
    """Names the variables added, removed or changed from manifest ``a`` to ``b``.

    Raises:
        ManifestError: either argument is not a manifest.
    """
    ea, eb = entries(a), entries(b)
    changed = []
    for path in sorted(ea.keys() & eb.keys()):
        fields = tuple(k for k in ("shape", "dtype", "sha256") if ea[path][k] != eb[path][k])
        if fields:
            changed.append(Change(path, fields, ea[path], eb[path]))
    return ManifestDiff(
        added=tuple(sorted(eb.keys() - ea.keys())),
        removed=tuple(sorted(ea.keys() - eb.keys())),
        changed=tuple(changed),
        frozen_changed=tuple(
            p for p in sorted(ea.keys() & eb.keys()) if ea[p]["frozen"] != eb[p]["frozen"]
        ),
    )
