"""Verify an export: weights match the manifest, frozen weights match the pretrained ones.

:func:`verify_export` re-checks a directory written by
:func:`recipes.export.export_saved_model` from scratch, trusting nothing it did not
recompute:

1. manifest integrity: ``zoo_manifest.json`` parses, its digest matches its entries;
2. variables: every variable in the SavedModel's checkpoint is read on its own (so a
   corrupted one is named, not just "the checkpoint is broken"), hashed, and compared
   with its manifest entry; the checkpoint holds nothing the manifest does not cover;
3. the SavedModel loads with ``tf.saved_model.load``, has the three signatures with
   the four outputs (``recipes.export_format.outputs_of``: multi-label exports return
   multi-hot ``class_ids`` / ``class_names``), and the variables it serves with hash
   the same;
4. frozen: every variable frozen in all stages is bitwise equal to an anchor outside
   the export: the registry's pinned pretrained file, loaded into a fresh backbone
   (:mod:`zoo.proof`; the backbone and weight source are read from ``metadata.json``),
   and the ``--source-manifest`` file when one is given; both when both are there. The
   source manifest embedded in the export is never evidence. With no anchor the check
   says "not proven" (a failure when a proof is required);
5. labels: ``labels.txt`` matches the class names in ``metadata.json``;
6. parity: the signatures' outputs on a fixed probe batch match the Keras model (the
   one in memory, else the ``model.keras`` file in the export), max absolute difference
   <= 1e-5 in float32, through float32 pixels, uint8 pixels and PNG bytes; class ids
   and names agree wherever the decision is clear (argmax, or a multi-label
   probability farther than 10x the tolerance from the threshold);
7. deployed: every file ``zoo_manifest.json`` lists under ``"deployed"`` (the LiteRT
   and ONNX files of :mod:`recipes.deploy`, and their ``labels.txt``) is there and
   hashes as listed.

Every failure is collected and named; nothing stops at the first one.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from recipes import export_format as fmt
from recipes.export_format import PROBE_BATCH, PROBE_SEED, TOLERANCE, probe_batch
from zoo import fingerprint, proof
from zoo.errors import InvalidValueError, MissingFileError, ZooError

__all__ = [
    "PROBE_BATCH",
    "PROBE_SEED",
    "TOLERANCE",
    "Check",
    "VerifyResult",
    "collection_keys",
    "main_verify",
    "probe_batch",
    "verify_export",
]


@dataclass(frozen=True)
class Check:
    """One verification step: ``passed`` is None when it was skipped."""

    name: str
    passed: bool | None
    detail: str


@dataclass
class VerifyResult:
    """The outcome of :func:`verify_export`.

    Attributes:
        export_dir: the directory checked.
        passed: True when every check that ran held (and no failure was recorded).
        failures: one line per failure, naming the variable, signature or file.
        checks: every step with its outcome and a one-line detail.
        num_variables: variables in the manifest.
        num_frozen: variables frozen in all stages.
        max_abs_diff: the largest output difference found in the parity check.
    """

    export_dir: Path
    passed: bool = True
    failures: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    num_variables: int = 0
    num_frozen: int = 0
    max_abs_diff: float | None = None

    def _record(self, name: str, failures: list[str], detail: str) -> None:
        self.failures.extend(failures)
        self.passed = not self.failures
        self.checks.append(
            Check(name, not failures, f"{len(failures)} failures" if failures else detail)
        )

    def _skip(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, None, detail))

    @property
    def frozen_proven(self) -> bool | None:
        """The frozen check's outcome: True proven, False disproven, None not proven."""
        return next((c.passed for c in self.checks if c.name == "frozen"), None)

    def report(self) -> str:
        """A short human-readable report: one line per check, then every failure."""
        mark = {True: "ok  ", False: "FAIL", None: "skip"}
        lines = [f"verify {self.export_dir}"]
        lines += [f"  {mark[c.passed]} {c.name}: {c.detail}" for c in self.checks]
        if self.passed and self.frozen_proven is None and self.num_frozen:
            lines.append("passed, but the frozen weights are not proven unchanged")
        elif self.passed:
            lines.append("passed")
        else:
            lines.append(f"FAILED: {len(self.failures)} failures")
            lines += [f"  - {failure}" for failure in self.failures]
        return "\n".join(lines)


def verify_export(
    export_dir: str | os.PathLike,
    source_manifest: dict[str, Any] | str | os.PathLike | None = None,
    model: keras.Model | None = None,
    tolerance: float = TOLERANCE,
    require_proof: bool = False,
) -> VerifyResult:
    """Checks an export (see the module doc) and returns every failure found.

    Args:
        export_dir: a directory written by ``recipes.export.export_saved_model``.
        source_manifest: a manifest of the pretrained weights you trust (dict or JSON
            path), a second anchor for the frozen check besides the registry's file.
        model: the Keras model the export came from, for the parity check and a
            manifest comparison; default the export's ``model.keras``.
        tolerance: the largest absolute difference allowed between the signatures'
            logits or probabilities and the Keras model's (float32).
        require_proof: when no anchor proves the frozen variables (check 4 says "not
            proven"), record that as a failure.

    Returns:
        A :class:`VerifyResult`; ``result.passed`` is False with ``result.failures``
        naming each variable, signature or file that is wrong;
        ``result.frozen_proven`` tells proven (True) from not proven (None).

    Raises:
        FileNotFoundError: ``export_dir`` (or ``source_manifest``) does not exist, or
            is not a SavedModel directory.
        zoo.fingerprint.ManifestError: ``source_manifest`` is not a manifest.
    """
    directory = Path(export_dir)
    if not directory.is_dir():
        raise MissingFileError(f"No export directory at {directory}.")
    if not (directory / "saved_model.pb").is_file():
        raise MissingFileError(
            f"{directory} is not a SavedModel directory (no saved_model.pb); point to the "
            "directory export_saved_model wrote."
        )
    if isinstance(source_manifest, (str, os.PathLike)):
        source_manifest = fingerprint.load(source_manifest)
    elif source_manifest is not None:
        fingerprint.check(source_manifest)

    result = VerifyResult(directory)
    zoo_manifest, meta, labels = _read_assets(directory, result)
    entries = _manifest_entries(zoo_manifest, result)
    actual = _checkpoint_hashes(directory, entries, result) if entries is not None else None
    loaded = _load(directory, meta, entries, actual, result)
    _check_frozen(zoo_manifest, meta, entries, actual, source_manifest, require_proof, result)
    _check_labels(meta, labels, result)
    _check_parity(directory, loaded, meta, entries, model, result, tolerance)
    _check_deployed(directory, zoo_manifest, result)
    return result


# -- 1. assets and manifest ---------------------------------------------------------------


def _read_assets(directory: Path, result: VerifyResult) -> tuple[Any, Any, Any]:
    failures = []
    values = []
    assets = directory / "assets"
    for name in (fmt.MANIFEST_FILE, fmt.METADATA_FILE, fmt.LABELS_FILE):
        path = assets / name
        try:
            text = path.read_text(encoding="utf-8")
            values.append(text.splitlines() if name.endswith(".txt") else json.loads(text))
        except FileNotFoundError:
            failures.append(f"assets/{name} is missing")
            values.append(None)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            failures.append(f"assets/{name} is not valid: {error}")
            values.append(None)
    result._record("assets", failures, "labels.txt, zoo_manifest.json, metadata.json present")
    return values[0], values[1], values[2]


def _manifest_entries(zoo_manifest: Any, result: VerifyResult) -> list[dict[str, Any]] | None:
    if zoo_manifest is None:
        result._skip("manifest", "no readable zoo_manifest.json")
        return None
    failures = []
    try:
        weights = fingerprint.check(zoo_manifest.get("manifest"))
    except (fingerprint.ManifestError, AttributeError) as error:
        result._record("manifest", [f"zoo_manifest.json: {error}"], "")
        return None
    if fingerprint.digest(weights) != weights.get("digest"):
        failures.append(
            "zoo_manifest.json was edited: its digest does not match its variable entries"
        )
    flagged = sorted(fingerprint.frozen_set(weights))
    if sorted(zoo_manifest.get("frozen_in_all_stages") or []) != flagged:
        failures.append("zoo_manifest.json: frozen_in_all_stages disagrees with the frozen flags")
    source = zoo_manifest.get("source")
    if source is not None:
        try:
            if fingerprint.digest(source["manifest"]) != source.get("digest"):
                failures.append("zoo_manifest.json: the embedded source manifest was edited")
        except (fingerprint.ManifestError, KeyError, TypeError) as error:
            failures.append(f"zoo_manifest.json: embedded source manifest is malformed: {error}")
    entries = weights["variables"]
    result.num_variables = len(entries)
    result.num_frozen = len(flagged)
    result._record("manifest", failures, f"{len(entries)} variables, {len(flagged)} frozen")
    return entries


# -- 2. the checkpoint's own bytes ----------------------------------------------------------


def collection_keys(directory: str | os.PathLike) -> list[str]:
    """Checkpoint keys of the ``zoo_variables`` collection, in manifest order.

    Read from the checkpoint's object graph, so this works even when some variable's
    bytes are corrupted and the SavedModel no longer loads.

    Raises:
        ValueError: the checkpoint has no ``zoo_variables`` collection.
    """
    import tensorflow as tf
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    reader = tf.train.load_checkpoint(str(Path(directory) / "variables" / "variables"))
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    root = graph.nodes[0]
    node_ids = [c.node_id for c in root.children if c.local_name == fmt.VARIABLE_COLLECTION]
    if not node_ids:
        raise InvalidValueError(
            f"The SavedModel has no {fmt.VARIABLE_COLLECTION!r} collection; it was not "
            "written by recipes.export."
        )
    children = sorted(graph.nodes[node_ids[0]].children, key=lambda c: int(c.local_name))
    keys = []
    for child in children:
        attributes = [
            a for a in graph.nodes[child.node_id].attributes if a.name == "VARIABLE_VALUE"
        ]
        keys.append(attributes[0].checkpoint_key if attributes else "")
    return keys


def _checkpoint_hashes(
    directory: Path, entries: list[dict[str, Any]], result: VerifyResult
) -> dict[str, str]:
    """sha256 per manifest path, recomputed from the checkpoint; records failures."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(str(directory / "variables" / "variables"))
        keys = collection_keys(directory)
    except (ValueError, tf.errors.OpError) as error:
        result._record("variables", [f"cannot read the SavedModel variables: {_line(error)}"], "")
        return {}
    failures = []
    if len(keys) != len(entries):
        failures.append(
            f"the SavedModel holds {len(keys)} variables, the manifest lists {len(entries)}"
        )
    hashes = {}
    for key, entry in zip(keys, entries, strict=False):
        path = entry["path"]
        try:
            value = reader.get_tensor(key)
        except Exception as error:  # DataLoss (checksum) or a missing key: name the variable
            failures.append(f"variable {path}: unreadable in the SavedModel ({_line(error)})")
            continue
        hashes[path] = fingerprint.array_sha256(value)
        failures += _entry_mismatches(path, value, hashes[path], entry, "the SavedModel variables")
    extra = set(reader.get_variable_to_shape_map()) - set(keys) - {"_CHECKPOINTABLE_OBJECT_GRAPH"}
    failures += [
        f"the SavedModel holds tensor {k} that no manifest entry covers" for k in sorted(extra)
    ]
    result._record("variables", failures, f"{len(hashes)} variables hash as in the manifest")
    return hashes


def _entry_mismatches(
    path: str, value: Any, sha: str, entry: dict[str, Any], where: str
) -> list[str]:
    value = np.asarray(value)
    problems = []
    if list(value.shape) != list(entry["shape"]):
        problems.append(f"shape {list(value.shape)} != manifest {entry['shape']}")
    if value.dtype.name != entry["dtype"]:
        problems.append(f"dtype {value.dtype.name} != manifest {entry['dtype']}")
    if sha != entry["sha256"]:
        problems.append(f"sha256 {sha[:12]}... != manifest {entry['sha256'][:12]}...")
    return [f"variable {path}: in {where}, " + ", ".join(problems)] if problems else []


def _line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}"[:300]


# -- 3. load and signatures --------------------------------------------------------------------


def _load(
    directory: Path,
    meta: Any,
    entries: list[dict[str, Any]] | None,
    actual: dict[str, str] | None,
    result: VerifyResult,
) -> Any:
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(directory))
    except Exception as error:  # any load error is a verification failure to report
        result._record("load", [f"tf.saved_model.load fails: {_line(error)}"], "")
        return None
    failures = []
    wanted = fmt.outputs_of(meta if isinstance(meta, dict) else None)
    for name in fmt.SIGNATURES:
        if name not in loaded.signatures:
            failures.append(f"signature {name} is missing")
            continue
        outputs = set(loaded.signatures[name].structured_outputs)
        if outputs != set(wanted):
            failures.append(f"signature {name} outputs {sorted(outputs)}, expected {list(wanted)}")
    served = list(getattr(loaded, fmt.VARIABLE_COLLECTION, []))
    if entries is not None:
        if len(served) != len(entries):
            failures.append(
                f"the loaded model serves {len(served)} variables, the manifest lists {len(entries)}"
            )
        for variable, entry in zip(served, entries, strict=False):
            value = variable.numpy()
            sha = fingerprint.array_sha256(value)
            if actual is not None and actual.get(entry["path"]) == sha == entry["sha256"]:
                continue
            failures += _entry_mismatches(entry["path"], value, sha, entry, "the loaded SavedModel")
    result._record("load", failures, f"loads; signatures {', '.join(fmt.SIGNATURES)}")
    return loaded


# -- 4. frozen == the pretrained weights, from an anchor outside the export ----------------


@dataclass(frozen=True)
class _Anchor:
    """A reference for frozen variables: ``entries`` cover the paths under ``prefix``."""

    label: str
    entries: dict[str, dict[str, Any]]
    prefix: str = ""

    def mismatch(self, path: str, sha: str, shape: list[int]) -> list[str]:
        before = self.entries.get(path)
        if before is None:
            return [f"frozen variable {path} is not in {self.label}"]
        if sha != before["sha256"] or list(shape) != list(before["shape"]):
            return [
                f"frozen variable {path} changed since the pretrained source: sha256 "
                f"{before['sha256'][:12]}... -> {sha[:12]}... ({self.label})"
            ]
        return []


def _registry_anchor(meta: Any) -> tuple[_Anchor | None, str]:
    """The registry's pinned file as an anchor, or why there is none."""
    record = meta.get(fmt.PRETRAINED_KEY) if isinstance(meta, dict) else None
    if record is None:
        return None, "metadata.json names no pretrained origin (not a zoo classifier?)"
    try:
        origin = proof.PretrainedOrigin.from_dict(record)
        reference = proof.pretrained_manifest(origin)
    except ZooError as error:  # unavailable offline, unknown backbone, bad hash: no anchor
        return None, _message(error)
    label = f"the registry's {origin.weights} weights of {origin.backbone}"
    return _Anchor(label, fingerprint.entries(reference), f"{origin.layer}/"), ""


def _message(error: BaseException) -> str:
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


def _check_frozen(
    zoo_manifest: Any,
    meta: Any,
    entries: list[dict[str, Any]] | None,
    actual: dict[str, str] | None,
    given: dict[str, Any] | None,
    require_proof: bool,
    result: VerifyResult,
) -> None:
    if entries is None:
        result._skip("frozen", "no manifest")
        return
    frozen = [e for e in entries if e["frozen"]]
    if not frozen:
        result._record("frozen", [], "no variable is frozen in all stages; nothing to prove")
        return
    registry, why = _registry_anchor(meta)
    anchors = [registry] if registry is not None else []
    if given is not None:
        anchors.append(_Anchor("--source-manifest", fingerprint.entries(given)))
    failures = _embedded_disagrees(zoo_manifest, given)
    unproven = []
    for entry in frozen:
        path = entry["path"]
        sha = (actual or {}).get(path, entry["sha256"])
        covering = [a for a in anchors if path.startswith(a.prefix)]
        unproven += [] if covering else [path]
        for anchor in covering:
            failures += anchor.mismatch(path, sha, entry["shape"])
    if failures or not unproven:
        labels = " and ".join(a.label for a in anchors)
        result._record(
            "frozen", failures, f"{len(frozen)} frozen variables bitwise equal to {labels}"
        )
        return
    _not_proven(_why_not(frozen, unproven, anchors, why), require_proof, result)


def _embedded_disagrees(zoo_manifest: Any, given: dict[str, Any] | None) -> list[str]:
    embedded = (zoo_manifest or {}).get("source")
    if given is None or embedded is None or fingerprint.digest(given) == embedded.get("digest"):
        return []
    return [
        "the source manifest embedded in the export is not the one given (digests differ); "
        "checking against the one given"
    ]


def _why_not(
    frozen: list[dict[str, Any]], unproven: list[str], anchors: list[_Anchor], why: str
) -> str:
    if not anchors:
        return f"{why}; pass --source-manifest FILE to prove the {len(frozen)} frozen variables"
    return (
        f"{len(unproven)} of {len(frozen)} frozen variables (e.g. {unproven[0]}) are outside "
        f"{' and '.join(a.label for a in anchors)}; pass --source-manifest FILE covering them"
    )


def _not_proven(why: str, require_proof: bool, result: VerifyResult) -> None:
    if require_proof:
        result._record("frozen", [f"frozen: not proven, and a proof is required: {why}"], "")
    else:
        result._skip("frozen", f"not proven: {why}")


# -- 5. labels ----------------------------------------------------------------------------


def _check_labels(meta: Any, labels: list[str] | None, result: VerifyResult) -> None:
    if meta is None or labels is None:
        result._skip("labels", "labels.txt or metadata.json unreadable")
        return
    names = meta.get("class_names")
    failures = []
    if labels != names:
        failures.append(f"labels.txt ({len(labels)} lines) differs from metadata.json class_names")
    result._record("labels", failures, f"{len(labels)} classes")


# -- 6. parity ------------------------------------------------------------------------------


def _reference_model(directory: Path, model: keras.Model | None, result: VerifyResult) -> Any:
    if model is not None:
        return model, "the in-memory model"
    with contextlib.suppress(ImportError):  # registers zoo's Classifier for loading
        import zoo.classifier  # noqa: F401
    path = directory / fmt.KERAS_FILE
    if not path.is_file():
        result._record("parity", [f"{fmt.KERAS_FILE} is missing; no model to compare with"], "")
        return None, ""
    try:
        return keras.saving.load_model(path, safe_mode=True), fmt.KERAS_FILE
    except Exception as error:  # a .keras that does not load is a failure to report
        result._record("parity", [f"{fmt.KERAS_FILE} does not load: {_line(error)}"], "")
        return None, ""


def _check_parity(
    directory: Path,
    loaded: Any,
    meta: Any,
    entries: list[dict[str, Any]] | None,
    model: keras.Model | None,
    result: VerifyResult,
    tolerance: float,
) -> None:
    if loaded is None or meta is None:
        result._skip("parity", "the SavedModel or metadata.json did not load")
        return
    missing = [k for k in ("input_size", "class_names") if k not in meta]
    if missing:
        result._record("parity", [f"metadata.json lacks {missing}"], "")
        return
    threshold = meta.get("threshold")
    if threshold is not None and not (isinstance(threshold, (int, float)) and 0 < threshold < 1):
        result._record(
            "parity", [f"metadata.json threshold {threshold!r} is not a probability in (0, 1)"], ""
        )
        return
    reference, origin = _reference_model(directory, model, result)
    if reference is None:
        return
    failures = []
    if entries is not None:
        changed = fingerprint.diff(
            {"format": fingerprint.MANIFEST_FORMAT, "variables": entries},
            fingerprint.manifest(reference),
        )
        if changed:
            lines = changed.describe().splitlines()
            failures += [f"{origin} differs from the export: {line}" for line in lines]
    probe = probe_batch(meta["input_size"])
    logits = np.asarray(keras.ops.convert_to_numpy(reference(probe, training=False)), np.float32)
    if fmt.outputs_of(meta) == fmt.MULTI_LABEL_OUTPUTS:
        expected = _expected_multi_hot(logits, float(meta["threshold"]), tolerance)
    else:
        expected = _expected_outputs(
            logits, bool(meta.get("multi_label")), meta["class_names"], tolerance
        )
    worst = 0.0
    for name, outputs in _signature_outputs(loaded, probe).items():
        problems, diff = _compare(outputs, expected, tolerance, meta["class_names"])
        worst = max(worst, diff)
        failures += [f"signature {name}: {p}" for p in problems]
    result.max_abs_diff = worst
    result._record(
        "parity", failures, f"max |difference| {worst:.2e} vs {origin} on {len(probe)} probe images"
    )


def _expected_outputs(
    logits: np.ndarray, multi_label: bool, names: list[str], tolerance: float
) -> dict[str, Any]:
    import tensorflow as tf

    probabilities = tf.sigmoid(logits) if multi_label else tf.nn.softmax(logits, axis=-1)
    top2 = np.sort(logits, axis=-1)[:, -2:] if logits.shape[-1] > 1 else None
    clear = (
        np.ones(len(logits), bool) if top2 is None else (top2[:, 1] - top2[:, 0]) > 10 * tolerance
    )
    ids = logits.argmax(axis=-1)
    return {
        "logits": logits,
        "probabilities": probabilities.numpy(),
        "class_id": ids,
        "class_name": [names[i] for i in ids],
        "clear": clear,
    }


def _expected_multi_hot(logits: np.ndarray, threshold: float, tolerance: float) -> dict[str, Any]:
    """A multi-label export's expected outputs; ``clear`` marks the decisions to compare.

    A probability within ``10 * tolerance`` of the threshold may fall on either side in
    the export, so its ``class_ids`` entry is not compared.
    """
    import tensorflow as tf

    probabilities = tf.sigmoid(logits).numpy()
    return {
        "logits": logits,
        "probabilities": probabilities,
        "class_ids": (probabilities > threshold).astype(np.int64),
        "clear": np.abs(probabilities - threshold) > 10 * tolerance,
    }


def _signature_outputs(loaded: Any, probe: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    import tensorflow as tf

    png = [tf.io.encode_png(image).numpy() for image in probe.astype(np.uint8)]
    calls = {
        "serving_default": {"images": tf.constant(probe)},
        "serving_uint8": {"images": tf.constant(probe.astype(np.uint8))},
        "serve_bytes": {"image_bytes": tf.constant(png)},
    }
    outputs = {}
    for name, kwargs in calls.items():
        if name in loaded.signatures:
            out = loaded.signatures[name](**kwargs)
            outputs[name] = {k: v.numpy() for k, v in out.items()}
    return outputs


def _compare(
    outputs: dict[str, np.ndarray],
    expected: dict[str, Any],
    tolerance: float,
    class_names: list[str],
) -> tuple[list[str], float]:
    problems = []
    worst = 0.0
    for key in ("logits", "probabilities"):
        diff = float(np.max(np.abs(outputs[key] - expected[key])))
        worst = max(worst, diff)
        if not diff <= tolerance:  # also catches NaN
            problems.append(
                f"{key} differ from the Keras model by up to {diff:.3g} (> {tolerance})"
            )
    if "class_ids" in expected:
        return problems + _multi_hot_problems(outputs, expected, class_names), worst
    clear = expected["clear"]
    if np.any(outputs["class_id"][clear] != expected["class_id"][clear]):
        problems.append("class_id differs from the Keras model's argmax")
    names = [n.decode("utf-8") for n in outputs["class_name"]]
    wanted = [expected["class_name"][i] if clear[i] else names[i] for i in range(len(names))]
    if names != wanted:
        problems.append(f"class_name {names} != {wanted}")
    return problems, worst


def _multi_hot_problems(
    outputs: dict[str, np.ndarray], expected: dict[str, Any], class_names: list[str]
) -> list[str]:
    """``class_ids`` equal probabilities > threshold where clear; ``class_names`` follow them."""
    problems = []
    ids, clear = outputs["class_ids"], expected["clear"]
    if ids.shape != expected["class_ids"].shape:
        return [f"class_ids has shape {ids.shape}, expected {expected['class_ids'].shape}"]
    if np.any(ids[clear] != expected["class_ids"][clear]):
        problems.append("class_ids differ from the Keras model's probabilities > threshold")
    names = np.vectorize(lambda n: n.decode("utf-8"), otypes=[object])(outputs["class_names"])
    wanted = np.where(ids == 1, np.array(class_names, dtype=object), "")
    if names.shape != wanted.shape or np.any(names != wanted):
        problems.append("class_names are not the names of the classes in class_ids")
    return problems


# -- 7. deployed files ----------------------------------------------------------------------


def _check_deployed(directory: Path, zoo_manifest: Any, result: VerifyResult) -> None:
    import hashlib

    listed = (zoo_manifest or {}).get(fmt.DEPLOYED_KEY) or {}
    if not listed:  # a SavedModel-only export: no check line, as before deployment existed
        return
    failures = []
    for name, entry in sorted(listed.items()):
        path = directory / name
        if not path.is_file():
            failures.append(f"deployed file {name} is missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != entry.get("sha256"):
            failures.append(f"deployed file {name}: sha256 differs from the manifest (changed)")
    result._record("deployed", failures, f"{len(listed)} files hash as in the manifest")


def main_verify(
    export_dir: str, source_manifest: str | None = None, require_proof: bool = False
) -> int:
    """``zoo verify``: prints the report; 0 when every check holds, 1 otherwise.

    With ``require_proof``, frozen variables that no anchor proves also exit 1.

    Raises:
        FileNotFoundError: no export (or source manifest) at the given path; the CLI
            turns it into a one-line error and exit code 2.
    """
    result = verify_export(export_dir, source_manifest=source_manifest, require_proof=require_proof)
    print(result.report())
    return 0 if result.passed else 1
