"""Deploy an export: LiteRT (TFLite) float32 / float16 / int8 and ONNX files, each checked.

:func:`deploy` converts the Keras classifier of an export (the in-memory model, else the
export's ``model.keras``) with :mod:`recipes.deploy_convert` and writes the files next to
the SavedModel (the table is :data:`recipes.export_format.FORMATS`)::

    model.tflite          tflite       float32 weights and activations
    model_fp16.tflite     tflite-fp16  float16 weights, float32 activations
    model_int8.tflite     tflite-int8  int8 weights and activations, uint8 pixel input,
                                       uint8 probabilities (p = scale * (q - zero_point))
    model.onnx            onnx         float32, dynamic batch (tf2onnx, opset ONNX_OPSET)
    labels.txt                         one class name per line, in class-id order
    MODEL_CARD.md                      the model card (recipes.model_card)

Every file takes RGB pixels 0..255 ``(batch, height, width, 3)`` at the export's input
size (preprocessing is inside). A ``.tflite`` returns ``probabilities`` and carries TFLite
Model Metadata (:mod:`recipes.tflite_metadata`: normalization, class names, licences), so
MediaPipe Tasks' ``ImageClassifier`` loads it as it is; an ``.onnx`` returns ``logits`` and
``probabilities`` and carries the class names in its ``metadata_props``.

Each file is checked before anything is written, run with the runtime a user would use
(:mod:`recipes.deploy_runtime`: the LiteRT interpreter, onnxruntime):

1. parity on a probe batch against the Keras model: max |difference| of each output the
   file has (logits, probabilities) <= 1e-4 for float32 files, <= 1e-2 for float16, each
   times the logit scale ``max(1, max |logit|)`` (:func:`parity_bound`); for int8, top-1
   agreement with the float model;
2. top-1 on the evaluation images (the run's test split) when given, and its drop from
   the Keras model's;
3. size on disk, batch-1 latency and batched images/s.

The files are written atomically (:func:`zoo.files.atomic_path`) and listed with their
sha256 in the export's ``assets/zoo_manifest.json`` under ``"deployed"``, so
``zoo verify`` re-hashes them (and reads each ``.tflite``'s metadata). All conversions
run before the first file is written, so a failing format leaves the export as it was.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from recipes import export_format as fmt
from recipes.deploy_convert import CALIBRATION_IMAGES, ONNX_OPSET, DeployError, convert
from recipes.deploy_runtime import Runner, labels_inside, load_runner, runner_for
from recipes.export_format import DEPLOYED_KEY, FORMATS, SAVED_MODEL, DeployFormat, check_formats
from recipes.model_card import write_model_card
from recipes.tflite_metadata import model_info
from zoo.errors import InvalidValueError, MissingFileError
from zoo.files import atomic_path, write_text_atomic

__all__ = [
    "CALIBRATION_IMAGES",
    "DEPLOYED_KEY",
    "FORMATS",
    "ONNX_OPSET",
    "SAVED_MODEL",
    "DeployError",
    "DeployFormat",
    "DeployResult",
    "check_formats",
    "convert",
    "deploy",
    "expected_outputs",
    "labels_inside",
    "load_runner",
]

PARITY_IMAGES = 32  # probe images for int8 top-1 agreement when real images are given
INT8_MIN_AGREEMENT = 0.9  # on real images; on random pixels it is only reported


@dataclass(frozen=True)
class DeployResult:
    """What :func:`deploy` measured for one written file.

    Attributes:
        format: the format name.
        file: the file name, relative to the export directory.
        sha256: of the file's bytes.
        bytes: size on disk.
        parity: max |output difference| (float formats) or top-1 agreement 0..1 (int8).
        parity_images: how many probe images ``parity`` is over.
        passed: whether parity held.
        top1: top-1 on the evaluation images, or None when none were given.
        top1_drop: the Keras model's top-1 minus ``top1`` (points of 0..1).
        latency_ms: median batch-1 latency, milliseconds.
        images_per_s: batched throughput, images per second.
        batch: the batch size of ``images_per_s``.
    """

    format: str
    file: str
    sha256: str
    bytes: int
    parity: float
    parity_images: int
    passed: bool
    top1: float | None = None
    top1_drop: float | None = None
    latency_ms: float | None = None
    images_per_s: float | None = None
    batch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields, for report.json."""
        return asdict(self)


# -- checks ----------------------------------------------------------------------------------


def _outputs(run: Runner, images: np.ndarray, batch: int = 32) -> dict[str, np.ndarray]:
    """A runner's outputs over ``images`` in batches, concatenated per output."""
    parts = [run(images[i : i + batch]) for i in range(0, len(images), batch)]
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _scores(run: Runner, images: np.ndarray) -> np.ndarray:
    """What a file ranks classes by: its probabilities (argmax as the logits')."""
    return _outputs(run, images)[fmt.PROBABILITIES]


def _keras_logits(model: keras.Model, images: np.ndarray) -> np.ndarray:
    out = model.predict(images, batch_size=32, verbose=0)
    return np.asarray(out, np.float32)


def expected_outputs(
    logits: np.ndarray, multi_label: bool, temperature: float = 1.0
) -> dict[str, np.ndarray]:
    """What a deployed file should return for these reference logits ``(n, classes)``.

    Returns:
        ``{"logits": logits, "probabilities": softmax(logits / temperature) (sigmoid if
        multi_label)}``, float32, computed in float64.
    """
    return {
        fmt.LOGITS: logits,
        fmt.PROBABILITIES: fmt.probabilities(logits, multi_label, temperature),
    }


def _speed(run: Callable[[np.ndarray], np.ndarray], probe: np.ndarray, batch: int):
    """Median batch-1 latency (ms) and batched images/s, a fraction of a second each."""
    one = probe[:1]
    run(one)
    times = []
    start = time.perf_counter()
    while len(times) < 5 or (time.perf_counter() - start < 0.3 and len(times) < 200):
        t = time.perf_counter()
        run(one)
        times.append(time.perf_counter() - t)
    many = np.resize(probe, (batch, *probe.shape[1:]))
    run(many)
    rounds, start = 0, time.perf_counter()
    while rounds < 2 or time.perf_counter() - start < 0.3:
        run(many)
        rounds += 1
    return 1000 * float(np.median(times)), batch * rounds / (time.perf_counter() - start)


# (images, labels) arrays, or a callable returning an iterable of such batches.
Evaluation = tuple[np.ndarray, np.ndarray] | Callable[[], Iterable[tuple[Any, Any]]]


@dataclass(frozen=True)
class _Probe:
    images: np.ndarray
    logits: np.ndarray
    real: bool  # real images (not random pixels): int8 agreement is a pass/fail check
    multi_label: bool = False
    temperature: float = 1.0


def _check(
    spec: DeployFormat,
    data: bytes,
    probe: _Probe,
    evaluation: tuple[Callable[[], Iterable[Any]], float] | None,
    batch: int,
) -> dict[str, Any]:
    run = runner_for(spec, data)
    outputs = _outputs(run, probe.images)
    expected = expected_outputs(probe.logits, probe.multi_label, probe.temperature)
    if spec.tolerance is not None:
        parity = max(float(np.max(np.abs(outputs[k] - expected[k]))) for k in spec.outputs)
        passed = parity <= parity_bound(spec.tolerance, probe.logits, probe.temperature)
    else:
        scores = outputs[fmt.PROBABILITIES]
        parity = float(np.mean(scores.argmax(-1) == probe.logits.argmax(-1)))
        passed = parity >= INT8_MIN_AGREEMENT or not probe.real
    found: dict[str, Any] = {"parity": parity, "parity_images": len(probe.images)}
    found["passed"] = passed
    if evaluation is not None:
        batches, reference = evaluation
        top1 = _top1(lambda images: _scores(run, images), batches)
        found.update(top1=top1, top1_drop=reference - top1)
    found["latency_ms"], found["images_per_s"] = _speed(run, probe.images, batch)
    found["batch"] = batch
    return found


# -- the deploy step -------------------------------------------------------------------------


def deploy(
    export_dir: str | Path,
    formats: Iterable[str],
    model: keras.Model | None = None,
    calibration: np.ndarray | None = None,
    evaluation: Evaluation | None = None,
    batch: int = 32,
    float_top1: float | None = None,
) -> list[DeployResult]:
    """Converts, checks and writes each format next to the export's SavedModel.

    Args:
        export_dir: a directory written by ``recipes.export.export_saved_model``.
        formats: format names (``saved_model`` is accepted and skipped: it is there).
        model: the Keras model the export came from; default its ``model.keras``.
        calibration: float32 training images ``(n, height, width, 3)`` 0..255 that
            calibrate ``tflite-int8`` (the first ``CALIBRATION_IMAGES`` are used).
        evaluation: the run's test split, for top-1 per format: ``(images, labels)``
            arrays, or a callable returning an iterable of such batches (streamed, so
            a large split never sits in memory at once).
        batch: batch size of the throughput measurement.
        float_top1: the Keras model's top-1 on ``evaluation`` when already known (the
            runner's evaluation); computed here otherwise.

    Returns:
        One :class:`DeployResult` per format, in the order given.

    Raises:
        UnknownNameError: an unknown format name.
        MissingFileError: ``export_dir`` is not an export, or has no ``model.keras``.
        InvalidValueError: ``tflite-int8`` with no calibration images.
        DeployError: a converter refused the model, or a file failed its parity check;
            nothing was written.
    """
    names = check_formats(formats)
    directory = Path(export_dir)
    meta = _read_metadata(directory)
    if model is None:
        model = load_keras_model(directory)
    if not names:
        return []
    batches = _as_batches(evaluation)
    probe = _make_probe(model, meta, calibration, batches)
    reference = None
    if batches is not None:
        if float_top1 is None:
            float_top1 = _top1(lambda images: _keras_logits(model, images), batches)
        reference = (batches, float_top1)
    manifest = json.loads((directory / "assets" / fmt.MANIFEST_FILE).read_text("utf-8"))
    info = model_info(meta, manifest)
    files, results, failures = {}, [], []
    # One probabilities-only SavedModel serves every TFLite conversion of this call.
    with tempfile.TemporaryDirectory(prefix="zoo-deploy-") as serving_dir:
        for name in names:
            spec = FORMATS[name]
            data = convert(model, name, calibration, serving_dir=serving_dir, info=info)
            found = _check(spec, data, probe, reference, batch)
            if not found["passed"]:
                failures.append(f"{name}: parity {found['parity']:.3g} ({_parity_rule(spec)})")
            files[spec.file] = data
            results.append(DeployResult(name, spec.file, _sha256(data), len(data), **found))
    if failures:
        raise DeployError(
            "Deployed files failed their parity check, so none was written: " + "; ".join(failures)
        )
    _write(directory, files, results, meta["class_names"])
    split = ((meta.get("recipe") or {}).get("data") or {}).get("evaluate_on", "evaluation")
    evaluated = None if float_top1 is None else {"split": split, "top1": float_top1}
    write_model_card(directory, [r.to_dict() for r in results], evaluated)
    return results


def _as_batches(evaluation: Evaluation | None) -> Callable[[], Iterable[Any]] | None:
    if evaluation is None or callable(evaluation):
        return evaluation
    images, labels = evaluation
    return lambda: [(images[i : i + 256], labels[i : i + 256]) for i in range(0, len(images), 256)]


def _top1(logits_of: Callable[[np.ndarray], np.ndarray], batches: Callable[[], Iterable]) -> float:
    correct = total = 0
    for images, labels in batches():
        predicted = logits_of(np.asarray(images, np.float32)).argmax(-1)
        correct += int(np.sum(predicted == np.asarray(labels)))
        total += len(predicted)
    return correct / max(total, 1)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parity_bound(tolerance: float, logits: np.ndarray, temperature: float = 1.0) -> float:
    """The largest |output difference| a float format may show: ``tolerance`` per unit of
    the logit scale, ``tolerance * max(1, max |logit|)``, times ``max(1, 1 / (2 T))``.

    Relative, not absolute, because a format's rounding error grows with the logits it
    rounds: float16 keeps 11 significant bits (unit roundoff 2**-11, 4.9e-4), and its
    relative error accumulates through the layers (EfficientNet-Lite0 on the main job:
    max |difference| 0.025 on logits up to 5.1, 0.5% of the scale). Logits within
    +-1 keep the absolute bound.

    Softmax and sigmoid move less than their inputs (|d p| <= |d input| / 2), and a
    calibrated softmax's input is ``logits / T``, so the bound holds for the probabilities
    too once a temperature below 0.5 scales it by ``1 / (2 T)``.

    Args:
        tolerance: the format's :attr:`DeployFormat.tolerance`.
        logits: the Keras model's logits on the probe, ``(n, classes)``.
        temperature: the export's calibration temperature ``T``.
    """
    scale = max(1.0, float(np.max(np.abs(logits), initial=0.0)))
    return tolerance * scale * max(1.0, 0.5 / temperature)


def _parity_rule(spec: DeployFormat) -> str:
    if spec.tolerance is None:
        return f"top-1 agreement must be >= {INT8_MIN_AGREEMENT}"
    return f"max |output difference| must be <= {spec.tolerance} x max(1, max |logit|)"


def _read_metadata(directory: Path) -> dict[str, Any]:
    if not fmt.is_export(directory):
        raise MissingFileError(
            f"{directory} is not a zoo export (needs saved_model.pb and "
            f"assets/{fmt.MANIFEST_FILE}); point to a run's export/ directory."
        )
    return json.loads((directory / "assets" / fmt.METADATA_FILE).read_text("utf-8"))


def load_keras_model(directory: str | Path) -> keras.Model:
    """The export's ``model.keras``, loaded with ``safe_mode=True``.

    Raises:
        MissingFileError: the export has no ``model.keras``.
    """
    import zoo.classifier  # noqa: F401  (registers zoo's layers for loading)

    path = Path(directory) / fmt.KERAS_FILE
    if not path.is_file():
        raise MissingFileError(
            f"{directory} has no {fmt.KERAS_FILE}, so there is no Keras model to convert; "
            "re-export the run with `zoo run` (exports include it)."
        )
    return keras.saving.load_model(path, safe_mode=True)


def _make_probe(
    model: keras.Model,
    meta: dict[str, Any],
    calibration: np.ndarray | None,
    batches: Callable[[], Iterable[Any]] | None,
) -> _Probe:
    """Real images when there are some (evaluation first), else the fixed random probe."""
    multi, temperature = bool(meta.get("multi_label")), fmt.temperature_of(meta)
    first = next(iter(batches()), None) if batches is not None else None
    for source in (None if first is None else first[0], calibration):
        if source is not None and len(source):
            images = np.asarray(source[:PARITY_IMAGES], np.float32)
            return _Probe(images, _keras_logits(model, images), True, multi, temperature)
    images = fmt.probe_batch(meta["input_size"])
    return _Probe(images, _keras_logits(model, images), False, multi, temperature)


def _write(
    directory: Path, files: dict[str, bytes], results: list[DeployResult], names: list[str]
) -> None:
    """Writes each file atomically, then labels.txt, then the manifest entries."""
    for file, data in files.items():
        with atomic_path(directory / file) as tmp:
            tmp.write_bytes(data)
    labels = "\n".join(names) + "\n"
    write_text_atomic(directory / fmt.LABELS_FILE, labels)
    manifest_path = directory / "assets" / fmt.MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text("utf-8"))
    deployed = dict(manifest.get(DEPLOYED_KEY) or {})
    for result in results:
        deployed[result.file] = {
            "format": result.format,
            "sha256": result.sha256,
            "bytes": result.bytes,
        }
    deployed[fmt.LABELS_FILE] = {
        "format": "labels",
        "sha256": _sha256(labels.encode("utf-8")),
        "bytes": len(labels.encode("utf-8")),
    }
    manifest[DEPLOYED_KEY] = deployed
    write_text_atomic(manifest_path, json.dumps(manifest, sort_keys=True, indent=2) + "\n")


# -- zoo export ------------------------------------------------------------------------------


def resolve_export_dir(path: str | Path) -> Path:
    """An export directory, given it or a run directory holding ``export/``."""
    path = Path(path)
    return path / "export" if not fmt.is_export(path) and fmt.is_export(path / "export") else path


def load_calibration(path: str | Path, input_size: Sequence[int]) -> np.ndarray:
    """Calibration images from a ``.npy`` array or a directory of image files.

    Images from files are decoded to RGB and resized bilinearly to ``input_size``.

    Returns:
        float32 pixels 0..255 ``(n, height, width, 3)``.

    Raises:
        MissingFileError: no such file or directory.
        InvalidValueError: no images there (an empty calibration set).
    """
    import tensorflow as tf

    from zoo.data.images import decode_rgb

    path = Path(path)
    if path.is_file() and path.suffix == ".npy":
        images = np.load(path).astype(np.float32)
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())[:CALIBRATION_IMAGES]
        images = [tf.image.resize(decode_rgb(p), tuple(input_size)).numpy() for p in files]
        images = np.stack(images).astype(np.float32) if images else np.zeros((0,))
    else:
        raise MissingFileError(
            f"No calibration images at {path}; pass a .npy array (n, height, width, 3) or "
            "a directory of training images."
        )
    if len(images) == 0:
        raise InvalidValueError(
            f"The calibration set {path} is empty; tflite-int8 needs a few hundred "
            "training images (never test images)."
        )
    return images


def main_export(
    path: str,
    formats: Sequence[str],
    calibration: str | None = None,
    run_inputs: Callable[[bool], dict[str, Any] | None] | None = None,
    vendor: str | None = None,
) -> int:
    """``zoo export``: writes the formats into an export, prints what each measured.

    Args:
        path: an export directory, or the run directory holding it.
        formats: format names, and ``web`` for the web page (:mod:`recipes.web_page`;
            with no ``.tflite`` deployed yet, ``tflite`` is deployed for it).
        calibration: ``--calibration``: a directory of training images or a ``.npy``.
        run_inputs: ``recipes.runner.run_deploy_inputs`` for ``path``: called once the
            formats are checked, with whether the run's own calibration images are
            needed (int8 asked, no ``calibration`` given); it gives the run's evaluation
            split too, or None when ``path`` is not in a run directory.
        vendor: ``--vendor``: a local ``@mediapipe/tasks-vision`` package the web page
            copies in (offline page); only with ``web``.

    Raises:
        ZooError: unknown format, no export or Keras model, empty or missing
            calibration set, a model a converter refuses, ``vendor`` without ``web`` or
            not the pinned package; the CLI prints one line, exit 2.
    """
    from recipes import web_page

    web = web_page.WEB_FORMAT in formats
    names = check_formats([f for f in formats if f != web_page.WEB_FORMAT])
    if vendor is not None and not web:
        raise InvalidValueError("--vendor is for the web page: add --format web.")
    directory = resolve_export_dir(path)
    meta = _read_metadata(directory)
    if web:
        if vendor is not None:
            web_page.vendor_root(vendor)  # checked before any conversion
        if not any(n.startswith("tflite") for n in names) and not _has_tflite(directory):
            names.append("tflite")
    if not names:
        return _write_page(directory, vendor)
    own_calibration = "tflite-int8" in names and calibration is None
    kwargs = dict((run_inputs(own_calibration) if run_inputs else None) or {})
    if calibration is not None:
        kwargs["calibration"] = load_calibration(calibration, meta["input_size"])
    elif "tflite-int8" in names and kwargs.get("calibration") is None:
        raise InvalidValueError(
            "tflite-int8 needs calibration images: pass --calibration DIR_OR_NPY with a "
            "few hundred training images (never test images), or give the run directory."
        )
    results = deploy(directory, names, **kwargs)
    from recipes.text import print_table

    rows = [("format", "file", "MB", "parity", "top-1 (drop)", "batch-1 ms", "images/s")]
    for r in results:
        top1 = "-" if r.top1 is None else f"{r.top1:.4f} ({r.top1_drop or 0.0:+.4f})"
        rows.append(
            (
                r.format,
                r.file,
                f"{r.bytes / 1e6:.2f}",
                f"{r.parity:.3g}",
                top1,
                f"{r.latency_ms:.2f}",
                f"{r.images_per_s:.0f}",
            )
        )
    print_table(rows)
    print(f"wrote {len(results)} files into {directory}; `zoo verify {directory}` re-hashes them")
    return _write_page(directory, vendor) if web else 0


def _has_tflite(directory: Path) -> bool:
    from recipes import web_page

    try:
        web_page.page_model(directory)
    except MissingFileError:
        return False
    return True


def _write_page(directory: Path, vendor: str | None) -> int:
    from recipes import web_page

    folder = web_page.write_web_page(directory, vendor)
    print(
        f"wrote the web page {folder}/index.html; serve the folder (browsers refuse WASM "
        f"from file://): python -m http.server -d {folder}"
    )
    return 0
