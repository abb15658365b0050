"""Export a classifier as a SavedModel a plain TensorFlow user can serve.

The layout, signatures and outputs are :mod:`recipes.export_format`'s. Besides the
SavedModel, the export carries the labels, the weight manifest (with the frozen set),
``metadata.json`` with the backbone's pretrained origin (registry name, weight source,
input shape: what :mod:`recipes.verify` rebuilds the frozen weights' anchor from) and
the same model as a ``.keras`` file.

The export is written atomically: into a temporary directory next to the target,
verified with :func:`recipes.verify.verify_export`, then renamed into place. An earlier
export at the target is renamed away first and deleted only once the new one is in
place, so an interrupted or failed export never leaves a half-written directory there.
While it runs the export holds a lock beside the target (``.<name>.lock``, naming its
process); a second export to the same target is refused. A staging or set-aside
directory (``.<name>.tmp-*``, ``.<name>.old-*``) left by a killed export is never read:
the next export there removes it (:func:`remove_leftovers`), and ``zoo verify`` refuses
to check one (:func:`is_leftover`). A full disk is one :class:`zoo.files.DiskFullError`
naming the export and about how much it needed.
The verification checks the frozen variables against the registry's pinned pretrained
file whenever the backbone's weights came from it, so a frozen variable that drifted
before the export is refused even when no source manifest is passed.

A classifier trained with ``zoo.LoRA`` is exported merged: each adapted kernel becomes
``kernel + (alpha / rank) * A @ B`` (Keras' own merge, :func:`zoo.lora.merge_lora`), so
the SavedModel, ``model.keras`` and the deployed files are a plain classifier with no
adapter variables. The adapters and the base kernels travel beside it in
``lora_adapters.npz``, each array's sha256 listed under ``"lora"`` in
``zoo_manifest.json``, so :mod:`recipes.verify` can prove the base kernels against the
pretrained weights and recompute the merge.

Built with ``keras.export.ExportArchive`` (Keras 3's SavedModel writer). The variables
the signatures use are also registered as the collection ``zoo_variables``, in manifest
order, which is how :mod:`recipes.verify` maps the SavedModel's own variables back to
manifest paths.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from recipes.deploy_convert import scores
from recipes.export_format import (
    DEFAULT_THRESHOLD,
    EXPORT_FORMAT,
    KERAS_FILE,
    LABELS_FILE,
    LORA_FILE,
    LORA_KEY,
    MANIFEST_FILE,
    METADATA_FILE,
    MULTI_LABEL_TEMPERATURE,
    NOT_A_TEMPERATURE,
    OUTPUTS,
    PRETRAINED_KEY,
    RESIZE_METHOD,
    SIGNATURES,
    TEMPERATURE_KEY,
    TOLERANCE,
    VARIABLE_COLLECTION,
    is_export,
    outputs_of,
    temperature_problem,
)
from recipes.model_card import write_model_card
from recipes.verify import VerifyResult, verify_export
from zoo import fingerprint, proof
from zoo.classifier import classifier_info
from zoo.errors import InvalidValueError, ZooError
from zoo.files import disk_full, exclusive_lock

__all__ = [
    "OUTPUTS",
    "SIGNATURES",
    "ExportError",
    "ExportResult",
    "export_saved_model",
    "is_export",
    "model_info",
]


class ExportError(ZooError, RuntimeError):
    """The export could not be written, or the written export failed verification.

    Attributes:
        result: the :class:`recipes.verify.VerifyResult` when verification failed.
    """

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_saved_model` wrote, and the verification it ran on it.

    Path-like (``os.fspath(result)`` is the directory), so it can be handed to
    ``verify_export`` or ``Predictor`` as is.

    Attributes:
        path: the export directory.
        verification: the :class:`recipes.verify.VerifyResult` of the export as
            written (it passed, or the export would have raised); its ``export_dir`` is
            ``path``.
    """

    path: Path
    verification: VerifyResult

    def __fspath__(self) -> str:
        return os.fspath(self.path)


def export_saved_model(
    model: keras.Model,
    export_dir: str | os.PathLike,
    source_manifest: dict[str, Any] | str | os.PathLike | None = None,
    frozen: Iterable[str] | None = None,
    metadata: dict[str, Any] | None = None,
    tolerance: float = TOLERANCE,
    require_proof: bool = False,
) -> ExportResult:
    """Exports a classifier as a verified SavedModel directory (see the module doc).

    Args:
        model: a classifier from ``zoo.build_classifier`` (or its ``.keras`` reload):
            float32 pixels 0..255 ``(batch, height, width, 3)`` -> logits
            ``(batch, num_classes)``. Other Keras models with that input and output
            work too; then ``metadata`` may give ``class_names``, ``backbone`` and
            ``multi_label``. A multi-label model's signatures return multi-hot
            ``class_ids`` and ``class_names`` above a threshold
            (:mod:`recipes.export_format`).
        export_dir: the directory to create or replace.
        source_manifest: the manifest of the pretrained source taken right after the
            weights loaded (``zoo.fingerprint.manifest``), or a path to its JSON. When
            given, every frozen variable must equal it bitwise or the export fails.
            Either way, when the backbone's weights came from the registry, every
            frozen backbone variable must equal the registry's pinned file, loaded
            anew (:func:`zoo.proof.pretrained_manifest`).
        frozen: manifest paths frozen in every training stage (e.g.
            ``FineTuneResult.frozen_in_all_stages``); default
            ``zoo.fingerprint.frozen_paths(model)``, i.e. frozen as the model is now.
        metadata: JSON-able extras for ``metadata.json``; ``"recipe"`` is stored as the
            recipe, ``"class_names"`` / ``"backbone"`` / ``"multi_label"`` override what
            the model says, ``"threshold"`` (multi-label only: a probability in (0, 1),
            default 0.5) is where ``class_ids`` turn 1, ``"temperature"`` (single-label
            only: a positive number, default 1.0) divides the logits before the softmax
            of every ``probabilities`` output (temperature scaling, Guo et al. 2017; the
            logits stay as trained), the rest goes under ``"extra"``.
        tolerance: the parity tolerance of the verification (max absolute difference
            of logits and probabilities, float32).
        require_proof: fail unless an anchor proves the frozen variables (the
            registry's pretrained file or ``source_manifest``).

    Returns:
        An :class:`ExportResult`: the export directory and the verification it passed.

    Raises:
        ValueError: the model's input or output does not fit a classifier, class names
            do not match the logits, ``frozen`` names unknown paths, ``metadata`` is
            not JSON-able, or the Keras backend is not TensorFlow.
        FileExistsError: ``export_dir`` exists and is not a zoo export.
        ExportError: the written export failed verification (``error.result`` lists
            every failure, e.g. each frozen variable that differs from the pretrained
            file); nothing was written at ``export_dir``.
    """
    _check_backend()
    target = Path(export_dir)
    _check_target(target)
    info = model_info(model, metadata)
    source = fingerprint.load(source_manifest) if _is_path(source_manifest) else source_manifest
    if source is not None:
        fingerprint.check(source)
    model, lora, frozen = _merged(model, frozen)
    weights_manifest = fingerprint.manifest(model, frozen)
    zoo_manifest = _zoo_manifest(weights_manifest, source, info)
    if lora is not None:
        zoo_manifest[LORA_KEY] = _lora_entry(lora)
    meta = _metadata(info, metadata)

    target.parent.mkdir(parents=True, exist_ok=True)
    with export_lock(target):
        remove_leftovers(target)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}{_STAGING}", dir=target.parent))
        try:
            _write_saved_model(model, info, staging)
            _write_assets(staging, info, zoo_manifest, meta)
            if lora is not None:
                _write_lora(staging / LORA_FILE, lora)
            model.save(staging / KERAS_FILE)
            verification = _verify_staged(staging, source, model, tolerance, require_proof)
            write_model_card(staging)  # MODEL_CARD.md; the deploy step adds its formats
            _swap_into_place(staging, target)
        except OSError as error:
            shutil.rmtree(staging, ignore_errors=True)
            # The SavedModel and model.keras each hold every weight once.
            needed = 2 * sum(int(v.numpy().nbytes) for v in model.weights)
            full = disk_full(error, target, needed)
            if full is None:
                raise
            raise full from error
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    verification.export_dir = target
    return ExportResult(target, verification)


# The name parts of the directories an export works in beside its target: the staging
# directory it writes and verifies, and the earlier export set aside during the swap.
_STAGING, _SET_ASIDE = ".tmp-", ".old-"


def is_leftover(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an export's staging or set-aside directory (``.<name>.tmp-*``,
    ``.<name>.old-*``): never a finished export, even when complete."""
    name = Path(path).name
    return name.startswith(".") and (_STAGING in name or _SET_ASIDE in name)


def export_lock(target: str | os.PathLike) -> contextlib.AbstractContextManager:
    """The lock an export to ``target`` holds (``.<name>.lock`` beside it, naming its PID).

    Raises:
        zoo.files.LockedError: on entry, when another process holds it.
    """
    target = Path(target)
    return exclusive_lock(target.parent / f".{target.name}.lock", f"the export {target}")


def remove_leftovers(target: str | os.PathLike) -> list[Path]:
    """Removes the staging and set-aside directories a killed export to ``target`` left.

    Call it holding the target's lock (as :func:`export_saved_model` does): then no
    export to ``target`` is running, so each one found is stale.

    Returns:
        The directories removed.
    """
    target = Path(target)
    found = [
        p
        for marker in (_STAGING, _SET_ASIDE)
        for p in target.parent.glob(f".{target.name}{marker}*")
        if p.is_dir() and not p.is_symlink()
    ]
    for path in found:
        shutil.rmtree(path)
    return found


def _merged(
    model: keras.Model, frozen: Iterable[str] | None
) -> tuple[keras.Model, Any, set[str] | None]:
    """The model to export (LoRA adapters merged), its LoRA record and frozen paths."""
    from zoo.lora import ADAPTERS, merge_lora

    merged, record = merge_lora(model)
    if record is None:
        return model, None, None if frozen is None else set(frozen)
    paths = fingerprint.frozen_paths(model) if frozen is None else set(frozen)
    return merged, record, {p for p in paths if p.rsplit("/", 1)[-1] not in ADAPTERS}


def _lora_entry(record: Any) -> dict[str, Any]:
    """zoo_manifest.json's ``"lora"``: rank, alpha, scale, tolerance and each array's sha256."""
    from zoo.lora import MERGE_TOLERANCE

    hashes = record.hashes()
    return {
        "file": LORA_FILE,
        "rank": record.rank,
        "alpha": record.alpha,
        "scale": record.scale,
        "merge": "kernel + scale * lora_kernel_a @ lora_kernel_b",
        "tolerance": MERGE_TOLERANCE,
        "layers": {
            layer.kernel: {
                key: {"sha256": hashes[f"{layer.prefix}/{key}"], "shape": list(array.shape)}
                for key, array in (
                    ("base", layer.base),
                    ("lora_kernel_a", layer.a),
                    ("lora_kernel_b", layer.b),
                )
            }
            for layer in record.layers
        },
    }


def _write_lora(path: Path, record: Any) -> None:
    """``lora_adapters.npz``: ``"<layer path>/base"``, ``/lora_kernel_a``, ``/lora_kernel_b``."""
    import numpy as np

    with open(path, "wb") as f:
        np.savez(f, **record.arrays())


def _is_path(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike))


def _check_backend() -> None:
    """Refuses before any work when the SavedModel cannot be written (one line, a fix)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return
    if importlib.util.find_spec("tensorflow") is None:
        raise InvalidValueError(
            f"export_saved_model writes a TensorFlow SavedModel and needs TensorFlow, which "
            f"is not installed (Keras runs on {backend!r}). Save the model with "
            "model.save('model.keras'), then in an environment with `pip install tensorflow` "
            "load it with KERAS_BACKEND=tensorflow and export it there."
        )
    raise InvalidValueError(
        f"export_saved_model writes a TensorFlow SavedModel and needs the TensorFlow "
        f"backend; Keras runs on {backend!r}. Run with "
        "KERAS_BACKEND=tensorflow (load the .keras file there and export it)."
    )


def _check_target(target: Path) -> None:
    if target.exists() and not (target.is_dir() and is_export(target) or _is_empty_dir(target)):
        raise FileExistsError(
            f"{target} exists and is not a zoo export; refusing to replace it. Pick a new "
            "directory or remove it first."
        )


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def model_info(model: keras.Model, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the export needs to know about ``model``: backbone, input size, classes.

    Uses ``zoo.classifier.classifier_info`` for classifiers built by zoo, and the
    model's input and output shapes otherwise; ``metadata`` keys ``class_names``,
    ``backbone`` and ``multi_label`` override; ``threshold`` sets a multi-label
    model's decision threshold (``info["threshold"]``; None for single-label) and
    ``temperature`` a single-label model's calibration temperature
    (``info["temperature"]``, default 1.0).

    Raises:
        ValueError: the input is not ``(batch, height, width, 3)`` with a fixed size,
            the output is not ``(batch, num_classes)``, the class names do not fit, or
            ``threshold`` is not a probability in (0, 1) or is given for a single-label
            model, or ``temperature`` is not a positive number or is given for a
            multi-label model.
    """
    metadata = dict(metadata or {})
    info = _classifier_info(model)
    input_shape = tuple(model.input_shape)
    output_shape = tuple(model.output_shape)
    problems = []
    if len(input_shape) != 4 or input_shape[-1] != 3 or None in input_shape[1:]:
        problems.append(
            f"input shape {input_shape}, expected (batch, height, width, 3) with a fixed size"
        )
    if len(output_shape) != 2 or output_shape[-1] is None:
        problems.append(f"output shape {output_shape}, expected logits (batch, num_classes)")
    if problems:
        raise InvalidValueError(
            "Cannot export this model as a classifier: " + "; ".join(problems) + "."
        )
    num_classes = int(output_shape[-1])
    info.setdefault("backbone", None)
    info.setdefault("multi_label", False)
    info.setdefault("preprocessing", _preprocessing_of(model))
    info.setdefault("class_names", [str(i) for i in range(num_classes)])
    info.update(
        {k: metadata[k] for k in ("class_names", "backbone", "multi_label") if k in metadata}
    )
    info["input_size"] = [int(input_shape[1]), int(input_shape[2])]
    info["num_classes"] = num_classes
    info["class_names"] = [str(name) for name in info["class_names"]]
    _check_class_names(info["class_names"], num_classes)
    info["threshold"] = _threshold(bool(info["multi_label"]), metadata.get("threshold"))
    info["temperature"] = _temperature(bool(info["multi_label"]), metadata.get(TEMPERATURE_KEY))
    return info


def _threshold(multi_label: bool, given: Any) -> float | None:
    """The multi-label decision threshold (default 0.5); None for a single-label model."""
    if not multi_label:
        if given is not None:
            raise InvalidValueError(
                f"metadata threshold={given!r} applies to multi-label models only; this one "
                "is single-label (softmax), so leave the threshold out."
            )
        return None
    value = DEFAULT_THRESHOLD if given is None else given
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise InvalidValueError(
            f"metadata threshold must be a probability strictly between 0 and 1; got "
            f"{value!r}. Use e.g. 0.5."
        )
    return float(value)


def _temperature(multi_label: bool, given: Any) -> float:
    """The calibration temperature (default 1.0: the softmax as trained)."""
    if given is None:
        return 1.0
    problem = temperature_problem(given, multi_label)
    if problem == NOT_A_TEMPERATURE:
        raise InvalidValueError(
            f"metadata temperature must be a positive number (softmax(logits / T)); got "
            f"{given!r}. Use the temperature fitted on the validation split, or leave it out."
        )
    if problem == MULTI_LABEL_TEMPERATURE:
        raise InvalidValueError(
            f"metadata temperature={given!r} applies to single-label (softmax) models; this "
            "one is multi-label (sigmoid per class), so leave the temperature out."
        )
    return float(given)


def _classifier_info(model: keras.Model) -> dict[str, Any]:
    try:
        info = dict(classifier_info(model))
    except ValueError:  # not built by zoo.build_classifier
        return {}
    info.pop("num_classes", None)
    info["preprocessing"] = dict(info.get("preprocessing") or {})
    origin = proof.origin_of(model)
    info["origin"] = None if origin is None else origin.to_dict()
    return info


def _preprocessing_of(model: keras.Model) -> dict[str, Any] | None:
    try:
        layer = model.get_layer("preprocess")
    except ValueError:
        return None
    config = layer.get_config()
    return {k: config.get(k) for k in ("mode", "mean", "std", "channel_order")}


def _check_class_names(names: list[str], num_classes: int) -> None:
    problems = []
    if len(names) != num_classes:
        problems.append(f"{len(names)} class names for {num_classes} logits")
    bad = [n for n in names if not n or "\n" in n or "\r" in n]
    if bad:
        problems.append(f"empty or multi-line class names {bad[:3]} (labels.txt is one per line)")
    if len(set(names)) != len(names):
        problems.append("duplicate class names")
    if problems:
        raise InvalidValueError("class names: " + "; ".join(problems) + ".")


def _zoo_manifest(
    weights_manifest: dict[str, Any], source: dict[str, Any] | None, info: dict[str, Any]
) -> dict[str, Any]:
    frozen = sorted(fingerprint.frozen_set(weights_manifest))
    if source is not None:
        missing = sorted(set(frozen) - set(fingerprint.entries(source)))
        if missing:
            raise InvalidValueError(
                f"{len(missing)} frozen variables are not in the source manifest, e.g. "
                f"{missing[:3]}; pass the manifest taken right after this model's "
                "pretrained weights loaded."
            )
    return {
        "format": EXPORT_FORMAT,
        "manifest": weights_manifest,
        "frozen_in_all_stages": frozen,
        "source": None
        if source is None
        else {"digest": fingerprint.digest(source), "manifest": source},
        "pretrained_weights": info.get("weights"),
        "variable_collection": VARIABLE_COLLECTION,
    }


def _metadata(info: dict[str, Any], metadata: dict[str, Any] | None) -> dict[str, Any]:
    import tensorflow as tf

    import zoo

    extra = {
        k: v
        for k, v in (metadata or {}).items()
        if k
        not in ("recipe", "class_names", "backbone", "multi_label", "threshold", TEMPERATURE_KEY)
    }
    meta = {
        "format": EXPORT_FORMAT,
        "backbone": info["backbone"],
        "input_size": info["input_size"],
        "num_classes": info["num_classes"],
        "class_names": info["class_names"],
        "multi_label": bool(info["multi_label"]),
        "preprocessing": info["preprocessing"],
        "head": info.get("head"),
        "pretrained_weights": info.get("weights"),
        PRETRAINED_KEY: info.get("origin"),
        "input": "RGB pixels 0..255; float32 or uint8 (batch, height, width, 3), or "
        "encoded image bytes; resized inside with " + RESIZE_METHOD,
        "resize": RESIZE_METHOD,
        "signatures": list(SIGNATURES),
        "outputs": list(OUTPUTS),  # single-label; a multi-label model's are set below
        TEMPERATURE_KEY: info["temperature"],
        "versions": {
            "zoo": zoo.__version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
        "recipe": (metadata or {}).get("recipe"),
        "extra": extra,
    }
    if info["threshold"] is not None:  # multi-label: single-label metadata stays as it was
        meta["threshold"] = info["threshold"]
        meta["outputs"] = list(outputs_of(meta))
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as error:
        raise InvalidValueError(
            f"metadata must be JSON-able (str, numbers, lists, dicts): {error}."
        ) from None
    return meta


def _write_saved_model(model: keras.Model, info: dict[str, Any], directory: Path) -> None:
    """Writes the SavedModel (signatures and the ``zoo_variables`` collection)."""
    import tensorflow as tf

    from zoo.data.images import decode_image_bytes

    height, width = info["input_size"]
    labels = tf.constant(info["class_names"], dtype=tf.string)

    def fit(images: tf.Tensor) -> tf.Tensor:
        size = tf.shape(images)[1:3]
        same = tf.reduce_all(tf.equal(size, [height, width]))
        images = tf.cond(
            same, lambda: images, lambda: tf.image.resize(images, (height, width), RESIZE_METHOD)
        )
        # A reshape, not tf.ensure_shape, pins the static shape: TFLite has no EnsureShape op,
        # and this way the signatures convert with a plain TFLiteConverter call.
        return tf.reshape(images, tf.stack([tf.shape(images)[0], height, width, 3]))

    threshold = info["threshold"]  # None: single-label (softmax, argmax)
    temperature = info["temperature"]

    def classify(images: tf.Tensor) -> dict[str, tf.Tensor]:
        logits = tf.cast(model(fit(images), training=False), tf.float32)
        if threshold is not None:
            return _multi_hot_outputs(logits, labels, threshold)
        probabilities = scores(logits, False, temperature)
        class_id = tf.argmax(logits, axis=-1, output_type=tf.int64)
        return {
            "logits": logits,
            "probabilities": probabilities,
            "class_id": class_id,
            "class_name": tf.gather(labels, class_id),
        }

    def serve_float(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return classify(images)

    def serve_uint8(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return classify(tf.cast(images, tf.float32))

    def decode(data: tf.Tensor) -> tf.Tensor:
        image = decode_image_bytes(data)  # the same pixels training decoded (zoo.data.images)
        return fit(tf.cast(image, tf.float32)[tf.newaxis])[0]

    def serve_bytes(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        spec = tf.TensorSpec((height, width, 3), tf.float32)
        return classify(tf.map_fn(decode, image_bytes, fn_output_signature=spec))

    archive = keras.export.ExportArchive()
    pixels = (None, None, None, 3)
    archive.add_endpoint(
        "serving_default", serve_float, [tf.TensorSpec(pixels, tf.float32, name="images")]
    )
    archive.add_endpoint(
        "serving_uint8", serve_uint8, [tf.TensorSpec(pixels, tf.uint8, name="images")]
    )
    archive.add_endpoint(
        "serve_bytes", serve_bytes, [tf.TensorSpec((None,), tf.string, name="image_bytes")]
    )
    # The TensorFlow variables behind the Keras ones: the very objects the signatures
    # capture, so the checkpoint holds one copy of each and the collection is what serves.
    ordered = [variable.value for _, variable in fingerprint.named_weights(model)]
    archive.add_variable_collection(VARIABLE_COLLECTION, ordered)
    archive.write_out(str(directory), verbose=False)


def _multi_hot_outputs(logits: Any, labels: Any, threshold: float) -> dict[str, Any]:
    """A multi-label model's outputs: sigmoid, and the classes strictly above ``threshold``.

    Args:
        logits: float32 ``(batch, num_classes)``.
        labels: string ``(num_classes,)`` class names.
        threshold: probability in (0, 1).

    Returns:
        ``logits``, ``probabilities`` (float32), ``class_ids`` (int64 multi-hot) and
        ``class_names`` (string; the name where ``class_ids`` is 1, ``""`` elsewhere), all
        ``(batch, num_classes)``; see :mod:`recipes.export_format`.
    """
    import tensorflow as tf

    probabilities = tf.sigmoid(logits)
    above = probabilities > threshold
    names = tf.broadcast_to(labels, tf.shape(logits))
    return {
        "logits": logits,
        "probabilities": probabilities,
        "class_ids": tf.cast(above, tf.int64),
        "class_names": tf.where(above, names, tf.zeros_like(names)),
    }


def _write_assets(
    directory: Path, info: dict[str, Any], zoo_manifest: dict[str, Any], meta: dict[str, Any]
) -> None:
    assets = directory / "assets"
    assets.mkdir(exist_ok=True)
    (assets / LABELS_FILE).write_text("\n".join(info["class_names"]) + "\n", encoding="utf-8")
    (assets / MANIFEST_FILE).write_text(
        json.dumps(zoo_manifest, sort_keys=True, indent=2) + "\n", encoding="utf-8"
    )
    (assets / METADATA_FILE).write_text(
        json.dumps(meta, sort_keys=True, indent=2) + "\n", encoding="utf-8"
    )


def _verify_staged(
    staging: Path,
    source: dict[str, Any] | None,
    model: keras.Model,
    tolerance: float,
    require_proof: bool,
) -> VerifyResult:
    result = verify_export(
        staging,
        source_manifest=source,
        model=model,
        tolerance=tolerance,
        require_proof=require_proof,
    )
    if not result.passed:
        raise ExportError(
            f"The export failed verification ({len(result.failures)} failures), so nothing "
            "was written:\n  " + "\n  ".join(result.failures),
            result,
        )
    return result


def _swap_into_place(staging: Path, target: Path) -> None:
    """Renames ``staging`` to ``target``; an old export there is removed only afterwards."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}{_SET_ASIDE}", dir=target.parent))
        old.rmdir()
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
