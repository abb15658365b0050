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
4. claim: which variables must be frozen follows from the recipe, not from the export's
   flags. The recipe recorded in ``metadata.json`` (or the one the caller pins,
   ``--recipe FILE``) is rebuilt with random weights, each stage's policy is applied
   and the variables frozen in every stage are the claim
   (:func:`zoo.proof.derive_frozen`). Every difference is named: variables the export
   adds or lacks against the recipe's classifier, shapes, frozen flags that disagree
   with the claim, a pretrained origin in ``metadata.json`` other than the recipe's, a
   recorded recipe other than the pinned one, a claim smaller than ``expect_frozen``.
   With no recipe the claim is the export's own flags ("not proven from a recipe");
5. frozen: every variable of the claim is bitwise equal to an anchor outside the
   export: the registry's pinned pretrained file, loaded into a fresh backbone
   (:mod:`zoo.proof`; the backbone and weight source are the recipe's, else read from
   ``metadata.json``), and the ``--source-manifest`` file when one is given; both when
   both are there. The source manifest embedded in the export is never evidence. With
   no anchor the check says "not proven" (a failure when a proof is required);
6. labels: ``labels.txt`` matches the class names in ``metadata.json``;
7. parity: the signatures' outputs on a fixed probe batch match the Keras model (the
   one in memory, else the ``model.keras`` file in the export), max absolute difference
   <= 1e-5 in float32, through float32 pixels, uint8 pixels and PNG bytes; class ids
   and names agree wherever the decision is clear (argmax, or a multi-label
   probability farther than 10x the tolerance from the threshold); the probabilities
   are ``softmax(logits / T)`` with ``metadata.json``'s calibration temperature;
8. deployed: every file ``zoo_manifest.json`` lists under ``"deployed"`` (the LiteRT
   and ONNX files of :mod:`recipes.deploy`, and their ``labels.txt``) is there and
   hashes as listed, no LiteRT or ONNX file lies there unlisted, and each model file
   runs, with the runtime users deploy it with, on the probe batch: its logits match
   the SavedModel's within the format's parity bound
   (:func:`recipes.deploy.parity_bound`; int8 files report their top-1 agreement);
9. tflite metadata: each deployed ``.tflite`` carries TFLite Model Metadata that
   MediaPipe Tasks can use: its labels equal the export's class names, in order, and
   its normalization fits its input type (:func:`recipes.tflite_metadata.problems`);
10. lora (a LoRA export, merged: :mod:`zoo.lora`): ``lora_adapters.npz`` holds exactly
    the base kernel and the two adapters of each layer ``zoo_manifest.json`` lists under
    ``"lora"``, each hashing as listed, and each merged kernel in the SavedModel equals
    ``base + (alpha / rank) * A @ B`` recomputed in float64 within relative
    :data:`zoo.lora.MERGE_TOLERANCE` (1e-6 of the kernel's largest value). The base
    kernels themselves are proven in check 5: a merged kernel in the claim is checked
    against the anchor through its base in ``lora_adapters.npz`` (hashed anew), so with
    LoRA every pretrained weight of the backbone is proven bitwise. Check 4 also compares
    the recorded layers, rank and alpha with the recipe's LoRA policy.

Every failure is collected and named; nothing stops at the first one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from recipes import export_format as fmt
from recipes.config import Recipe, RecipeError, load_recipe, parse_recipe
from recipes.deploy import FORMATS, expected_outputs, load_runner, parity_bound
from recipes.export_format import PROBE_BATCH, PROBE_SEED, TOLERANCE, probe_batch
from zoo import fingerprint, proof
from zoo.errors import InvalidValueError, MissingFileError, ZooError
from zoo.files import OutsideFolderError, path_inside

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
        num_frozen: variables in the frozen claim: derived from the recipe when there
            is one, else the variables the export flags frozen.
        claim_source: where the claim came from: ``"the recorded recipe"``,
            ``"--recipe"`` or ``"the export's flags"`` (not proven from a recipe).
        num_proven: claimed backbone variables proven bitwise equal to an anchor.
        num_proven_other: claimed variables outside the backbone proven so.
        num_backbone: the backbone's variables in the manifest.
        trained: what the recipe's policies train (blocks, then ``"head"``); None
            without a recipe.
        max_abs_diff: the largest output difference found in the parity check.
    """

    export_dir: Path
    passed: bool = True
    failures: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    num_variables: int = 0
    num_frozen: int = 0
    claim_source: str | None = None
    num_proven: int = 0
    num_proven_other: int = 0
    num_backbone: int = 0
    trained: tuple[str, ...] | None = None
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

    def proven_line(self) -> str:
        """How much is proven, e.g. ``"proven: 224 of 260 backbone variables bitwise
        pretrained; trained: block6, block7, top, head (per the recipe's policies)"``."""
        line = (
            f"proven: {self.num_proven} of {self.num_backbone} backbone variables bitwise "
            "pretrained"
        )
        if self.num_proven_other:
            line += f" (and {self.num_proven_other} variables outside the backbone)"
        missing = self.num_frozen - self.num_proven - self.num_proven_other
        if missing and self.frozen_proven is None:
            line += f"; {self.num_frozen} frozen variables not proven"
        elif missing:
            line += f"; {missing} of the {self.num_frozen} claimed frozen variables are not"
        if self.trained is not None:
            return f"{line}; trained: {', '.join(self.trained)} (per the recipe's policies)"
        return f"{line}; the frozen set is the export's own word (not proven from a recipe)"

    def report(self) -> str:
        """A short human-readable report: one line per check, how much is proven, then
        the verdict and every failure."""
        mark = {True: "ok  ", False: "FAIL", None: "skip"}
        lines = [f"verify {self.export_dir}"]
        lines += [f"  {mark[c.passed]} {c.name}: {c.detail}" for c in self.checks]
        if self.claim_source is not None:
            lines.append(self.proven_line())
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
    recipe: Recipe | str | os.PathLike | None = None,
    expect_frozen: int | None = None,
    require_claim: bool = False,
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
        require_proof: when no anchor proves the frozen variables (check 5 says "not
            proven"), record that as a failure.
        recipe: the recipe you trust (a ``Recipe``, or a ``.toml`` path such as the run
            directory's ``recipe.toml``); the claim is derived from it instead of the
            recipe recorded in the export, and a recorded recipe that differs from it
            in the model or the stages' policies is a failure.
        expect_frozen: the least number of variables the claim must hold (frozen in
            every stage); fewer is a failure.
        require_claim: also fail when the claim is not derived from a recipe (the
            export records none and ``recipe`` is not given), and when the recipe froze
            variables in some stage but none in every stage, so nothing is left to
            prove. ``zoo verify --require-proof`` sets this and ``require_proof``.

    Returns:
        A :class:`VerifyResult`; ``result.passed`` is False with ``result.failures``
        naming each variable, signature or file that is wrong;
        ``result.frozen_proven`` tells proven (True) from not proven (None).

    Raises:
        FileNotFoundError: ``export_dir`` (or ``source_manifest``, or ``recipe``) does
            not exist, or is not a SavedModel directory.
        zoo.fingerprint.ManifestError: ``source_manifest`` is not a manifest.
        recipes.config.RecipeError: ``recipe`` is not a valid recipe.
        ValueError: ``expect_frozen`` is negative.
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
    pinned = load_recipe(recipe) if isinstance(recipe, (str, os.PathLike)) else recipe
    if expect_frozen is not None and expect_frozen < 0:
        raise InvalidValueError(
            f"expect_frozen must be a number of variables >= 0, got {expect_frozen}."
        )

    result = VerifyResult(directory)
    zoo_manifest, meta, labels = _read_assets(directory, result)
    entries = _manifest_entries(zoo_manifest, result)
    actual = _checkpoint_hashes(directory, entries, result) if entries is not None else None
    loaded = _load(directory, meta, entries, actual, result)
    lora = _read_lora(directory, zoo_manifest)
    claim = _check_claim(meta, entries, pinned, expect_frozen, require_claim, result, lora)
    _check_frozen(
        zoo_manifest, meta, entries, actual, source_manifest, require_proof, claim, result, lora
    )
    _check_labels(meta, labels, result)
    served = _check_parity(directory, loaded, meta, entries, model, result, tolerance)
    _check_deployed(directory, zoo_manifest, meta, served, result)
    _check_tflite_metadata(directory, zoo_manifest, meta, result)
    _check_lora(directory, entries, lora, result)
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


# -- 4. the claim: which variables must be frozen, derived from the recipe ------------------


@dataclass(frozen=True)
class _Claim:
    """What check 5 proves: ``frozen`` paths, and the origin of the anchor when known."""

    frozen: tuple[str, ...]
    origin: proof.PretrainedOrigin | None  # from the recipe; None: read metadata.json


def _check_claim(
    meta: Any,
    entries: list[dict[str, Any]] | None,
    pinned: Recipe | None,
    expect_frozen: int | None,
    require_claim: bool,
    result: VerifyResult,
    lora: _LoRAFiles | None = None,
) -> _Claim | None:
    if entries is None:
        result._skip("claim", "no manifest")
        return None
    flagged = tuple(e["path"] for e in entries if e["frozen"])
    recorded, why = _recorded_recipe(meta)
    failures = [] if pinned is None or recorded is None else _recipes_differ(recorded, pinned)
    if pinned is not None and recorded is None and isinstance(meta, dict) and meta.get("recipe"):
        failures.append(f"metadata.json: {why.removeprefix('its ')}")
    recipe = pinned if pinned is not None else recorded
    result.num_backbone = sum(e["path"].startswith(f"{proof.BACKBONE_LAYER}/") for e in entries)
    if recipe is None:
        result.claim_source, result.num_frozen = "the export's flags", len(flagged)
        failures += _too_few(len(flagged), expect_frozen, "per the export's flags")
        detail = (
            f"{len(flagged)} variables flagged frozen: the export's own word, not proven "
            f"from a recipe ({why}; pass --recipe FILE, the run's recipe.toml)"
        )
        if require_claim:
            failures.append(
                f"frozen claim: not proven from a recipe: {why}; pass --recipe FILE (the "
                "recipe.toml of the run) to derive which variables must be frozen"
            )
        result._record("claim", failures, detail)
        return _Claim(flagged, None)
    where = "--recipe" if pinned is not None else "the recorded recipe"
    result.claim_source = where
    try:
        derived = _derive(recipe, meta)
    except (ZooError, KeyError, ValueError) as error:
        failures.append(f"frozen claim: {where} does not build a classifier: {_message(error)}")
        result.claim_source, result.num_frozen = "the export's flags", len(flagged)
        result._record("claim", failures, "")
        return _Claim(flagged, None)
    origin = _recipe_origin(recipe)
    result.num_frozen, result.trained = len(derived.frozen), derived.trained
    derived, lora_failures = _lora_claim(derived, recipe, lora, where)
    failures += lora_failures
    failures += _structure_differs(entries, derived, where)
    failures += _flags_differ(flagged, derived, where)
    failures += _origin_differs(meta, origin, recipe)
    failures += _too_few(len(derived.frozen), expect_frozen, f"by {where}'s policies")
    stages = ", ".join(f"{name} {count}" for name, count in derived.per_stage)
    if require_claim and not derived.frozen and derived.froze_anything:
        failures.append(
            f"frozen claim: {where}'s policies freeze no variable in every stage (frozen per "
            f"stage: {stages}), so nothing is left to prove"
        )
    result._record(
        "claim",
        failures,
        f"{len(derived.frozen)} variables frozen in every stage by {where}'s policies "
        f"(frozen per stage: {stages}); the export's flags agree",
    )
    return _Claim(derived.frozen, origin)


def _lora_claim(
    derived: proof.FrozenClaim, recipe: Recipe, lora: _LoRAFiles | None, where: str
) -> tuple[proof.FrozenClaim, list[str]]:
    """A merged export has no adapter variables: they are compared with ``"lora"``."""
    from zoo.lora import ADAPTERS, LoRA

    adapters = {p for p in derived.variables if p.rsplit("/", 1)[-1] in ADAPTERS}
    expected = {p.rsplit("/", 1)[0] + "/kernel" for p in adapters}
    recorded = set(lora.layers) if lora is not None else set()
    if not adapters and lora is None:
        return derived, []
    failures = [
        f"LoRA layer {path}: {where}'s policies adapt it, but the export records no adapters for it"
        for path in sorted(expected - recorded)
    ]
    failures += [
        f"LoRA layer {path}: the export records adapters for it, but {where}'s policies do "
        "not adapt it"
        for path in sorted(recorded - expected)
    ]
    policies = [s.make_policy() for s in recipe.stages]
    shapes = {(p.rank, p.alpha) for p in policies if isinstance(p, LoRA)}
    if lora is not None and shapes and (lora.rank, lora.alpha) not in shapes:
        failures.append(
            f"zoo_manifest.json: LoRA rank {lora.rank}, alpha {lora.alpha}; {where}'s policy "
            f"uses rank, alpha {sorted(shapes)}"
        )
    variables = {p: v for p, v in derived.variables.items() if p not in adapters}
    return dataclasses.replace(derived, variables=variables), failures


def _recorded_recipe(meta: Any) -> tuple[Recipe | None, str]:
    """The recipe recorded in ``metadata.json``, or None and why there is none."""
    data = meta.get("recipe") if isinstance(meta, dict) else None
    if data is None:
        return None, "the export records no recipe"
    if not isinstance(data, dict):
        return None, f"its recorded recipe is not valid (a {type(data).__name__}, not a table)"
    try:
        return parse_recipe(data, source="recorded in metadata.json"), ""
    except RecipeError as error:
        return None, f"its recorded recipe is not valid ({_message(error)})"


def _claim_fields(recipe: Recipe) -> dict[str, Any]:
    """What the claim and its anchor follow from: the model and each stage's policy."""
    return {
        "model.backbone": recipe.model.backbone,
        "model.weights": recipe.model.weights,
        "model.head": recipe.model.head.model_dump(mode="json"),
        "input shape": list(recipe.input_shape()),
        **{
            f"stages[{i}] ({stage.name})": stage.policy_config()
            for i, stage in enumerate(recipe.stages)
        },
    }


def _recipes_differ(recorded: Recipe, pinned: Recipe) -> list[str]:
    a, b = _claim_fields(recorded), _claim_fields(pinned)
    return [
        f"the recipe recorded in the export differs from --recipe: {key} is "
        f"{a.get(key, 'missing')!r} there, {b.get(key, 'missing')!r} in --recipe"
        for key in sorted(a.keys() | b.keys())
        if a.get(key) != b.get(key)
    ]


def _derive(recipe: Recipe, meta: Any) -> proof.FrozenClaim:
    """Builds the recipe's classifier (random weights) and derives the frozen claim."""
    from zoo.classifier import build_classifier
    from zoo.heads import HEADS

    num_classes = meta.get("num_classes") if isinstance(meta, dict) else None
    if not isinstance(num_classes, int) or num_classes < 1:
        names = meta.get("class_names") if isinstance(meta, dict) else None
        num_classes = len(names) if isinstance(names, list) and names else None
    if num_classes is None:
        raise InvalidValueError("metadata.json gives neither num_classes nor class_names")
    head = HEADS[recipe.model.head.type](**recipe.model.head.kwargs())
    model = build_classifier(
        recipe.model.backbone,
        num_classes=num_classes,
        head=head,
        weights=None,  # only which layers train matters here, not the values
        input_shape=recipe.input_shape(),
        multi_label=recipe.model.head.multi_label,
    )
    return proof.derive_frozen(model, [(s.name, s.make_policy()) for s in recipe.stages])


def _recipe_origin(recipe: Recipe) -> proof.PretrainedOrigin:
    weights = recipe.model.weights_arg
    kind = weights if weights in (None, proof.IMAGENET) else proof.USER_FILE
    return proof.PretrainedOrigin(recipe.model.backbone, kind, tuple(recipe.input_shape()))


def _structure_differs(
    entries: list[dict[str, Any]], derived: proof.FrozenClaim, where: str
) -> list[str]:
    """The export's variables against the recipe's classifier: added, missing, reshaped."""
    exported = {e["path"]: e for e in entries}
    failures = [
        f"variable {path} of {where}'s classifier is missing from the export"
        for path in sorted(derived.variables.keys() - exported.keys())
    ]
    failures += [
        f"variable {path} in the export is not a variable of {where}'s classifier"
        for path in sorted(exported.keys() - derived.variables.keys())
    ]
    for path in sorted(exported.keys() & derived.variables.keys()):
        shape, dtype = derived.variables[path]
        entry = exported[path]
        if list(entry["shape"]) != list(shape) or entry["dtype"] != dtype:
            failures.append(
                f"variable {path}: {entry['dtype']}{list(entry['shape'])} in the export, "
                f"{dtype}{list(shape)} in {where}'s classifier"
            )
    return failures


def _flags_differ(flagged: tuple[str, ...], derived: proof.FrozenClaim, where: str) -> list[str]:
    claimed, flags = set(derived.frozen), set(flagged)
    failures = []
    if claimed != flags:
        failures.append(
            f"frozen claim: the export flags {len(flags)} variables frozen in all stages, "
            f"{where}'s policies freeze {len(claimed)}"
        )
    failures += [
        f"variable {path} is frozen in every stage by {where}'s policies, but the export "
        "does not flag it frozen"
        for path in sorted(claimed - flags)
    ]
    failures += [
        f"variable {path} is flagged frozen, but {where}'s policies train it in some stage"
        for path in sorted(flags - claimed)
    ]
    return failures


def _origin_differs(meta: Any, origin: proof.PretrainedOrigin, recipe: Recipe) -> list[str]:
    """metadata.json's pretrained origin against the recipe's model."""
    record = meta.get(fmt.PRETRAINED_KEY) if isinstance(meta, dict) else None
    try:
        stored = proof.PretrainedOrigin.from_dict(record)
    except ZooError as error:
        return [f"metadata.json: pretrained origin: {_message(error)}"]
    failures = []
    if stored.backbone != origin.backbone:
        failures.append(
            f"metadata.json names backbone {stored.backbone!r}; the recipe builds "
            f"{origin.backbone!r}"
        )
    # A weights file the recipe names may be the registry's own file (zoo then records
    # "imagenet"); any other difference downgrades or upgrades what the anchor is.
    loaded_from_file = origin.weights == proof.USER_FILE and stored.weights == proof.IMAGENET
    if stored.weights != origin.weights and not loaded_from_file:
        failures.append(
            f"metadata.json says the backbone weights were {_weights_words(stored.weights)}; "
            f"the recipe loads {_weights_words(origin.weights)} (model.weights = "
            f"{recipe.model.weights!r})"
        )
    if list(stored.input_shape) != list(origin.input_shape):
        failures.append(
            f"metadata.json gives input shape {list(stored.input_shape)}; the recipe builds "
            f"{list(origin.input_shape)}"
        )
    return failures


def _weights_words(kind: str | None) -> str:
    return {
        None: "random (weights=None)",
        proof.IMAGENET: "the registry's imagenet file",
        proof.USER_FILE: "a file the registry does not pin",
    }.get(kind, repr(kind))


def _too_few(count: int, expect: int | None, who: str) -> list[str]:
    if expect is None or count >= expect:
        return []
    return [
        f"frozen claim: {count} variables are frozen in every stage ({who}); "
        f"--expect-frozen asks for at least {expect}"
    ]


# -- 5. frozen == the pretrained weights, from an anchor outside the export ----------------


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


def _registry_anchor(
    meta: Any, origin: proof.PretrainedOrigin | None
) -> tuple[_Anchor | None, str]:
    """The registry's pinned file as an anchor, or why there is none.

    ``origin`` is the recipe's when there is a recipe; else metadata.json's is read.
    """
    if origin is None:
        record = meta.get(fmt.PRETRAINED_KEY) if isinstance(meta, dict) else None
        if record is None:
            return None, "metadata.json names no pretrained origin (not a zoo classifier?)"
    try:
        origin = origin or proof.PretrainedOrigin.from_dict(record)
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
    claim: _Claim | None,
    result: VerifyResult,
    lora: _LoRAFiles | None = None,
) -> None:
    if entries is None or claim is None:
        result._skip("frozen", "no manifest")
        return
    by_path = {e["path"]: e for e in entries}
    frozen = [by_path[p] for p in claim.frozen if p in by_path]  # a missing one: check 4
    if not frozen:
        result._record("frozen", [], "no variable is frozen in all stages; nothing to prove")
        return
    registry, why = _registry_anchor(meta, claim.origin)
    anchors = [registry] if registry is not None else []
    if given is not None:
        anchors.append(_Anchor("--source-manifest", fingerprint.entries(given)))
    failures = _embedded_disagrees(zoo_manifest, given)
    unproven: list[str] = []
    proven: list[str] = []
    for entry in frozen:
        path = entry["path"]
        sha = (actual or {}).get(path, entry["sha256"])
        merged = lora is not None and path in lora.layers
        if merged:  # the export holds base + scale * A @ B: prove the base it records
            sha = lora.base_hashes.get(path, "")
        covering = [a for a in anchors if path.startswith(a.prefix)]
        unproven += [] if covering else [path]
        wrong = [line for anchor in covering for line in anchor.mismatch(path, sha, entry["shape"])]
        if merged:
            wrong = [f"{line} (the LoRA base kernel in {fmt.LORA_FILE})" for line in wrong]
        failures += wrong
        if covering and not wrong:
            proven.append(path)
    if failures or not unproven:
        result.num_proven = sum(p.startswith(f"{proof.BACKBONE_LAYER}/") for p in proven)
        result.num_proven_other = len(proven) - result.num_proven
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


# -- 6. labels ----------------------------------------------------------------------------


def _check_labels(meta: Any, labels: list[str] | None, result: VerifyResult) -> None:
    if meta is None or labels is None:
        result._skip("labels", "labels.txt or metadata.json unreadable")
        return
    names = meta.get("class_names")
    failures = []
    if labels != names:
        failures.append(f"labels.txt ({len(labels)} lines) differs from metadata.json class_names")
    result._record("labels", failures, f"{len(labels)} classes")


# -- 7. parity ------------------------------------------------------------------------------


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
) -> np.ndarray | None:
    """Records check 7; returns ``serving_default``'s logits on the probe (for check 8)."""
    if loaded is None or meta is None:
        result._skip("parity", "the SavedModel or metadata.json did not load")
        return None
    missing = [k for k in ("input_size", "class_names") if k not in meta]
    if missing:
        result._record("parity", [f"metadata.json lacks {missing}"], "")
        return None
    threshold = meta.get("threshold")
    if threshold is not None and not (isinstance(threshold, (int, float)) and 0 < threshold < 1):
        result._record(
            "parity", [f"metadata.json threshold {threshold!r} is not a probability in (0, 1)"], ""
        )
        return None
    temperature = meta.get(fmt.TEMPERATURE_KEY)
    if temperature is not None and fmt.temperature_problem(
        temperature, bool(meta.get("multi_label"))
    ):
        result._record(
            "parity",
            [
                f"metadata.json temperature {temperature!r} is not a positive number (or "
                "is not 1 on a multi-label export)"
            ],
            "",
        )
        return None
    probe = probe_batch(meta["input_size"])
    signatures = _signature_outputs(loaded, probe)
    served = signatures.get("serving_default", {}).get("logits")
    reference, origin = _reference_model(directory, model, result)
    if reference is None:
        return served
    failures = []
    if entries is not None:
        changed = fingerprint.diff(
            {"format": fingerprint.MANIFEST_FORMAT, "variables": entries},
            fingerprint.manifest(reference),
        )
        if changed:
            lines = changed.describe().splitlines()
            failures += [f"{origin} differs from the export: {line}" for line in lines]
    logits = np.asarray(keras.ops.convert_to_numpy(reference(probe, training=False)), np.float32)
    if fmt.outputs_of(meta) == fmt.MULTI_LABEL_OUTPUTS:
        expected = _expected_multi_hot(logits, float(meta["threshold"]), tolerance)
    else:
        expected = _expected_outputs(logits, meta, tolerance)
    worst = 0.0
    for name, outputs in signatures.items():
        problems, diff = _compare(outputs, expected, tolerance, meta["class_names"])
        worst = max(worst, diff)
        failures += [f"signature {name}: {p}" for p in problems]
    result.max_abs_diff = worst
    result._record(
        "parity", failures, f"max |difference| {worst:.2e} vs {origin} on {len(probe)} probe images"
    )
    return served


def _expected_outputs(logits: np.ndarray, meta: dict[str, Any], tolerance: float) -> dict[str, Any]:
    """A single-label export's expected outputs (calibrated probabilities included)."""
    names = meta["class_names"]
    temperature = fmt.temperature_of(meta)
    probabilities = fmt.probabilities(logits, bool(meta.get("multi_label")), temperature)
    top2 = np.sort(logits, axis=-1)[:, -2:] if logits.shape[-1] > 1 else None
    clear = (
        np.ones(len(logits), bool) if top2 is None else (top2[:, 1] - top2[:, 0]) > 10 * tolerance
    )
    ids = logits.argmax(axis=-1)
    return {
        "logits": logits,
        "probabilities": probabilities,
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


# -- 8. deployed files ----------------------------------------------------------------------


def _check_deployed(
    directory: Path, zoo_manifest: Any, meta: Any, served: np.ndarray | None, result: VerifyResult
) -> None:
    """Hashes, then runs each deployed model file against the SavedModel's logits."""
    import hashlib

    listed = (zoo_manifest or {}).get(fmt.DEPLOYED_KEY) or {}
    by_file = {spec.file: spec for spec in FORMATS.values()}
    unlisted = sorted(f for f in by_file if f not in listed and (directory / f).is_file())
    if not listed and not unlisted:  # a SavedModel-only export: no check line
        return
    failures = [
        f"deployed file {name} is in the export but not listed in zoo_manifest.json, so "
        "nothing vouches for it; delete it or deploy again with `zoo export`"
        for name in unlisted
    ]
    ran, notes = [], []
    for name, entry in sorted(listed.items()):
        path = _inside(directory, name)
        if path is None:  # a rewritten manifest may point anywhere: never read it
            failures.append(f"deployed file {name!r} lies outside the export")
            continue
        if not path.is_file():
            failures.append(f"deployed file {name} is missing")
            continue
        if hashlib.sha256(path.read_bytes()).hexdigest() != entry.get("sha256"):
            failures.append(f"deployed file {name}: sha256 differs from the manifest (changed)")
            continue
        spec = by_file.get(name)
        if spec is None:  # labels.txt and other files: their hash is the check
            continue
        if served is None:
            notes.append(f"{name} not run (no SavedModel logits to compare with)")
            continue
        try:
            run = load_runner(path)
        except ImportError as error:
            notes.append(f"{name} not run ({_line(error)}; pip install 'zoo[deploy]')")
            continue
        problem, outcome = _deployed_parity(spec, run, meta, served)
        failures += [f"deployed file {name} ({spec.name}): {problem}"] if problem else []
        ran.append(f"{name} {outcome}")
    runs = f"; vs the SavedModel on {len(served)} probe images: " if ran else ""
    detail = f"{len(listed)} files hash as in the manifest{runs}{', '.join(ran)}"
    result._record("deployed", failures, "; ".join([detail, *notes]))


def _inside(directory: Path, name: str) -> Path | None:
    """``directory / name`` if it stays inside the export, else None."""
    try:
        return path_inside(directory, name)
    except OutsideFolderError:
        return None


def _file_inside(directory: Path, name: str) -> bool:
    path = _inside(directory, name)
    return path is not None and path.is_file()


def _deployed_parity(spec: Any, run: Any, meta: Any, served: np.ndarray) -> tuple[str | None, str]:
    """A problem (or None) and the outcome of running one deployed file on the probe."""
    try:
        found = run(probe_batch(meta["input_size"]))
    except Exception as error:  # a file the runtime refuses is a failure to report
        return f"does not run: {_line(error)}", "does not run"
    # A .tflite returns probabilities, an .onnx logits and probabilities (spec.outputs).
    outputs = {k: np.asarray(found[k], np.float32) for k in spec.outputs if k in found}
    temperature = fmt.temperature_of(meta)
    expected = expected_outputs(served, bool(meta.get("multi_label")), temperature)
    shapes = {k: v.shape for k, v in outputs.items()}
    if set(outputs) != set(spec.outputs) or any(s != served.shape for s in shapes.values()):
        return f"outputs {shapes}, expected {list(spec.outputs)} of shape {served.shape}", (
            "wrong outputs"
        )
    if spec.tolerance is None:  # int8: random probe pixels give no bound to hold it to
        agree = int(np.sum(outputs[fmt.PROBABILITIES].argmax(-1) == served.argmax(-1)))
        return None, f"top-1 agrees on {agree} of {len(served)} (int8: reported, not bounded)"
    diff = max(float(np.max(np.abs(outputs[k] - expected[k]))) for k in spec.outputs)
    bound = parity_bound(spec.tolerance, served, temperature)
    outcome = f"max |output difference| {diff:.2e}"
    if not diff <= bound:  # also catches NaN
        return (
            f"{'/'.join(spec.outputs)} differ from the SavedModel's by up to {diff:.3g} on "
            "the probe images "
            f"(bound {bound:.3g}: {spec.tolerance} x max(1, max |logit|)); the file does "
            "not hold the SavedModel's weights",
            outcome,
        )
    return None, outcome


# -- 9. TFLite metadata -----------------------------------------------------------------------


def _check_tflite_metadata(
    directory: Path, zoo_manifest: Any, meta: Any, result: VerifyResult
) -> None:
    """Reads each deployed .tflite's metadata: labels and normalization (MediaPipe's view)."""
    from recipes import tflite_metadata

    listed = (zoo_manifest or {}).get(fmt.DEPLOYED_KEY) or {}
    files = sorted(n for n in listed if n.endswith(".tflite") and _file_inside(directory, n))
    if not files or not meta:  # no .tflite: no check line
        return
    failures = []
    for name in files:
        try:
            found = tflite_metadata.problems(directory / name, meta["class_names"])
        except ImportError as error:
            result._skip("tflite metadata", f"not read ({_line(error)}; pip install 'zoo[deploy]')")
            return
        failures += [f"{name}: {problem}" for problem in found]
    detail = f"{len(files)} .tflite files: labels and normalization as MediaPipe Tasks reads them"
    result._record("tflite metadata", failures, detail)


# -- 10. LoRA: the adapters and the merge ------------------------------------------------------


@dataclass(frozen=True)
class _LoRAFiles:
    """``zoo_manifest.json``'s ``"lora"`` and ``lora_adapters.npz`` as read (not trusted)."""

    rank: Any
    alpha: Any
    layers: dict[str, Any]  # kernel path -> {"base" | "lora_kernel_a" | "lora_kernel_b": entry}
    arrays: dict[str, np.ndarray]  # as in the file
    base_hashes: dict[str, str]  # kernel path -> sha256 of the base array in the file
    problems: tuple[str, ...]  # reading problems, recorded by check 10


def _read_lora(directory: Path, zoo_manifest: Any) -> _LoRAFiles | None:
    entry = (zoo_manifest or {}).get(fmt.LORA_KEY) if isinstance(zoo_manifest, dict) else None
    if entry is None:
        return None
    layers = entry.get("layers") if isinstance(entry, dict) else None
    if not isinstance(layers, dict):
        return _LoRAFiles(None, None, {}, {}, {}, ("zoo_manifest.json: lora is malformed",))
    arrays: dict[str, np.ndarray] = {}
    problems = []
    path = directory / fmt.LORA_FILE
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except FileNotFoundError:
        problems.append(f"{fmt.LORA_FILE} is missing; the merge cannot be recomputed")
    except Exception as error:  # a damaged file is a failure to report
        problems.append(f"{fmt.LORA_FILE} does not read: {_line(error)}")
    base_hashes = {
        kernel: fingerprint.array_sha256(arrays[f"{kernel.rsplit('/', 1)[0]}/base"])
        for kernel in layers
        if f"{kernel.rsplit('/', 1)[0]}/base" in arrays
    }
    return _LoRAFiles(
        entry.get("rank"), entry.get("alpha"), layers, arrays, base_hashes, tuple(problems)
    )


def _check_lora(
    directory: Path,
    entries: list[dict[str, Any]] | None,
    lora: _LoRAFiles | None,
    result: VerifyResult,
) -> None:
    """Adapters hash as listed; each merged kernel is base + scale * A @ B."""
    from zoo.lora import MERGE_TOLERANCE, merge_problems

    if lora is None:  # not a LoRA export: no check line
        return
    failures = list(lora.problems)
    rank, alpha = lora.rank, lora.alpha
    if not (isinstance(rank, int) and rank > 0 and isinstance(alpha, (int, float)) and alpha > 0):
        result._record(
            "lora",
            [
                *failures,
                f"zoo_manifest.json: LoRA rank {rank!r}, alpha {alpha!r} are not positive numbers",
            ],
            "",
        )
        return
    scale = alpha / rank
    wanted = {
        f"{kernel.rsplit('/', 1)[0]}/{key}": (kernel, key, listed)
        for kernel, record in lora.layers.items()
        for key, listed in (record or {}).items()
    }
    if lora.arrays:
        failures += [
            f"{fmt.LORA_FILE} holds {key}, which zoo_manifest.json does not list"
            for key in sorted(set(lora.arrays) - set(wanted))
        ]
    for key, (_kernel, part, listed) in sorted(wanted.items()):
        what = "LoRA base kernel" if part == "base" else "LoRA adapter"
        if lora.arrays and key not in lora.arrays:
            failures.append(f"{what} {key} is missing from {fmt.LORA_FILE}")
        elif key in lora.arrays:
            sha = fingerprint.array_sha256(lora.arrays[key])
            if not isinstance(listed, dict) or sha != listed.get("sha256"):
                recorded = listed.get("sha256", "?") if isinstance(listed, dict) else "?"
                failures.append(
                    f"{what} {key}: sha256 {sha[:12]}... != zoo_manifest.json "
                    f"{str(recorded)[:12]}... (changed)"
                )
    merged = _merged_kernels(directory, entries, set(lora.layers))
    checked = 0
    for kernel in sorted(lora.layers):
        prefix = kernel.rsplit("/", 1)[0]
        parts = [
            lora.arrays.get(f"{prefix}/{k}") for k in ("base", "lora_kernel_a", "lora_kernel_b")
        ]
        value = merged.get(kernel)
        if value is None or any(p is None for p in parts):
            if value is None and not lora.problems:
                failures.append(f"merged kernel {kernel} is not in the SavedModel")
            continue
        failures += merge_problems(f"merged kernel {kernel}", value, *parts, scale)
        checked += 1
    result._record(
        "lora",
        failures,
        f"{checked} merged kernels = base + {scale:g} * A @ B (rank {rank}, alpha {alpha:g}) "
        f"within relative {MERGE_TOLERANCE:g}; {len(wanted)} arrays of {fmt.LORA_FILE} hash "
        "as listed",
    )


def _merged_kernels(
    directory: Path, entries: list[dict[str, Any]] | None, paths: set[str]
) -> dict[str, np.ndarray]:
    """The SavedModel checkpoint's values of the manifest ``paths`` (unreadable: left out)."""
    import tensorflow as tf

    if not entries:
        return {}
    try:
        reader = tf.train.load_checkpoint(str(directory / "variables" / "variables"))
        keys = collection_keys(directory)
    except (ValueError, tf.errors.OpError):
        return {}  # check 2 names the problem
    out = {}
    for key, entry in zip(keys, entries, strict=False):
        if entry["path"] in paths:
            with contextlib.suppress(Exception):  # check 2 names an unreadable variable
                out[entry["path"]] = np.asarray(reader.get_tensor(key))
    return out


def main_verify(
    export_dir: str,
    source_manifest: str | None = None,
    require_proof: bool = False,
    recipe: str | None = None,
    expect_frozen: int | None = None,
) -> int:
    """``zoo verify``: prints the report; 0 when every check holds, 1 otherwise.

    With ``require_proof``, exit 1 also when the frozen variables are not proven by an
    anchor, when the frozen claim is not derived from a recipe (recorded in the export,
    or ``recipe``), and when the recipe froze variables in some stage but none in every
    stage (``verify_export``'s ``require_proof`` and ``require_claim``).

    Raises:
        FileNotFoundError: no export (or source manifest, or recipe) at the given path;
            the CLI turns it into a one-line error and exit code 2.
        recipes.config.RecipeError: ``recipe`` is not a valid recipe (exit code 2).
    """
    result = verify_export(
        export_dir,
        source_manifest=source_manifest,
        require_proof=require_proof,
        recipe=recipe,
        expect_frozen=expect_frozen,
        require_claim=require_proof,
    )
    print(result.report())
    return 0 if result.passed else 1
