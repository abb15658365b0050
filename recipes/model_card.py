"""``MODEL_CARD.md`` beside every export, in the Hugging Face / Model Cards layout.

A model card (Mitchell et al., "Model Cards for Model Reporting", FAT* 2019,
https://arxiv.org/abs/1810.03993; the Hugging Face model card layout: YAML front matter,
then model details, uses, training data, evaluation, limitations) says what a model is
for and how far its numbers go. :func:`write_model_card` builds it from what the export
and its run record, never from guesses:

- ``assets/metadata.json``: backbone, input size, classes, multi-label, the recipe
  (data source, splits' fractions and seed, ``[export] license``), versions;
- ``assets/zoo_manifest.json``: variables, the frozen set, the deployed files;
- the run's ``report.json`` when the export sits in a run directory: images per split,
  top-1 on the evaluated split, the kept epoch's training and validation accuracy, each
  deployed format's top-1, the verification record;
- the deploy step's results (``recipes.deploy``), which :func:`recipes.deploy.deploy`
  passes when it writes files.

What is not recorded is said to be so. The card is rewritten by the export, by each
deploy and by ``zoo export``; it is documentation, not evidence (``zoo verify`` checks).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from recipes import export_format as fmt
from zoo.files import write_text_atomic

REPORT_FILE = "report.json"


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}


def write_model_card(
    export_dir: str | Path,
    deployment: Sequence[Mapping[str, Any]] | None = None,
    evaluation: Mapping[str, Any] | None = None,
) -> Path:
    """Writes ``MODEL_CARD.md`` into an export (see the module doc).

    Args:
        export_dir: a zoo export directory.
        deployment: ``DeployResult.to_dict()`` per format just deployed; they replace
            the same formats' rows of the run's report.
        evaluation: ``{"split", "images", "top1"}``: the float model on the split the
            deploy step measured, when no report says it.

    Returns:
        The card's path.
    """
    directory = Path(export_dir)
    meta = _read(directory / "assets" / fmt.METADATA_FILE)
    manifest = _read(directory / "assets" / fmt.MANIFEST_FILE)
    report = _read(directory.parent / REPORT_FILE)
    rows = {r["format"]: dict(r) for r in report.get("deployment") or []}
    rows.update({r["format"]: dict(r) for r in deployment or []})
    deployed = manifest.get(fmt.DEPLOYED_KEY) or {}
    rows = {k: v for k, v in rows.items() if v.get("file") in deployed}
    text = render(meta, manifest, report, list(rows.values()), evaluation)
    path = directory / fmt.MODEL_CARD_FILE
    write_text_atomic(path, text)
    return path


def render(
    meta: Mapping[str, Any],
    manifest: Mapping[str, Any],
    report: Mapping[str, Any],
    deployment: Sequence[Mapping[str, Any]],
    evaluation: Mapping[str, Any] | None = None,
) -> str:
    """The card's Markdown (see :func:`write_model_card` for the inputs)."""
    from recipes.tflite_metadata import licenses, model_info

    info = model_info(dict(meta), dict(manifest))
    recipe = meta.get("recipe") or {}
    data = recipe.get("data") or {}
    own = (recipe.get("export") or {}).get("license")
    names = list(meta.get("class_names") or [])
    height, width = (meta.get("input_size") or ["?", "?"])[:2]
    backbone = meta.get("backbone") or "a backbone not in zoo's registry"
    lines = [
        "---",
        f"license: {_yaml(own or 'other')}",
        "library_name: keras",
        "pipeline_tag: image-classification",
        "tags: [zoo, image-classification, transfer-learning, tflite, mediapipe]",
        "---",
        "",
        f"# {info.name}",
        "",
        info.description,
        "",
        "## Model details",
        "",
        f"- Backbone: `{backbone}` ({_weights(meta)}), with a "
        f"{_head(meta)} head; fine-tuned with zoo {_version(meta, 'zoo')} on "
        f"TensorFlow {_version(meta, 'tensorflow')}, Keras {_version(meta, 'keras')}.",
        f"- Licences: {licenses(dict(meta))}.",
        f"- Version: {info.version}.",
        f"- Input: RGB pixels 0..255, {height}x{width} (the SavedModel resizes any size; "
        "the deployed files take exactly this size).",
        f"- Output: {len(names)} classes, "
        + (
            "independent sigmoid probabilities (multi-label)."
            if meta.get("multi_label")
            else _softmax_output(meta)
        ),
        "",
        "## Intended use",
        "",
        f"Classify photos into one of the {len(names)} classes below"
        + (" (several at once: multi-label)" if meta.get("multi_label") else "")
        + f", with images like the training data ({_source(report, data)}). "
        "Run it with TensorFlow (`tf.saved_model.load`, TF Serving), `zoo predict`, "
        "MediaPipe Tasks or LiteRT (`.tflite`), onnxruntime (`.onnx`) or the web page "
        "(`zoo export --format web`).",
        "",
        "Out of scope: images of anything else (the model always answers with one of its "
        "classes), decisions about people, and any use where a wrong class does harm "
        "without a person checking it.",
        "",
        "Classes, in class-id order: " + ", ".join(f"`{n}`" for n in names) + ".",
        "",
        "## Training data",
        "",
        *_data_lines(report, data),
        "",
        "## Evaluation",
        "",
        *_evaluation_lines(report, deployment, evaluation),
        "",
        "## Limitations",
        "",
        f"- Input size {height}x{width}: larger photos are resized down, and detail below "
        "that scale is lost; the deployed files expect the image already at this size "
        "(MediaPipe Tasks resizes for you).",
        f"- It knows only its {len(names)} classes; anything else is forced into one of them.",
        f"- Tested only on the held-out split of {_source(report, data)}: not on photos "
        "from other cameras, lighting, backgrounds or domains, not for robustness to "
        "corrupted or adversarial images, and not for fairness across groups.",
        *(
            [
                "- The int8 file trades some top-1 for size and speed; the table above gives "
                "the difference where it was measured."
            ]
            if any(r["format"].endswith("int8") for r in deployment)
            else []
        ),
        "",
        "## Verification",
        "",
        *_verification_lines(report, manifest),
        "",
    ]
    return "\n".join(lines)


def _yaml(value: str) -> str:
    return json.dumps(value)


def _version(meta: Mapping[str, Any], name: str) -> str:
    return str((meta.get("versions") or {}).get(name, "?"))


def _weights(meta: Mapping[str, Any]) -> str:
    from recipes.tflite_metadata import pretrained_source

    weights = pretrained_source(dict(meta))
    if weights is None:
        return "trained from random initialization"
    text = f"`{weights}` weights"
    origin = meta.get("pretrained") if isinstance(meta.get("pretrained"), Mapping) else {}
    url = _weights_url(meta.get("backbone"), origin.get("include_top"))
    text += f" from {url}" if url else ""
    digest = (
        (meta.get("pretrained_weights") or {})
        if isinstance(meta.get("pretrained_weights"), Mapping)
        else {}
    )
    return text + (f", file sha256 {digest['sha256'][:16]}..." if digest.get("sha256") else "")


def _weights_url(backbone: str | None, include_top: bool | None) -> str | None:
    import zoo

    if backbone not in zoo.list_backbones():
        return None
    sources = getattr(zoo.get_spec(backbone), "weights", ()) or ()
    urls = [s.url for s in sources if include_top is None or s.include_top == include_top]
    return urls[0] if urls else None


def _softmax_output(meta: Mapping[str, Any]) -> str:
    """The single-label output line: calibrated when the run fitted a temperature."""
    temperature = fmt.temperature_of(meta)
    if temperature == 1.0:
        return "softmax probabilities (one label per image)."
    return (
        f"softmax probabilities (one label per image), calibrated: softmax(logits / "
        f"{temperature:.3f}), the temperature fitted on the validation split; the logits "
        "are the model's own."
    )


def _head(meta: Mapping[str, Any]) -> str:
    head = meta.get("head")
    if isinstance(head, Mapping):
        return str(head.get("type") or head.get("class_name") or "classification")
    return str(head or "classification")


def _source(report: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    source = (report.get("data") or {}).get("source") or data.get("source")
    return f"`{source}`" if source else "a source the export does not record"


def _data_lines(report: Mapping[str, Any], data: Mapping[str, Any]) -> list[str]:
    split = report.get("data") or {}
    if not split and not data:
        return ["Not recorded in the export (it was not written by `zoo run`)."]
    lines = [f"- Source: {_source(report, data)}."]
    counts = [
        f"{name} {split[key]:,}"
        for name, key in (
            ("train", "train_images"),
            ("validation", "validation_images"),
            ("test", "test_images"),
        )
        if split.get(key) is not None
    ]
    if counts:
        lines.append(f"- Images per split: {', '.join(counts)}.")
    if split.get("test_split"):
        lines.append(f"- Test split: {split['test_split']}.")
    settings = {
        k: data[k]
        for k in ("train_size", "validation_fraction", "test_fraction", "seed", "image_size")
        if data.get(k) is not None
    }
    if settings:
        lines.append(
            "- Recipe: " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in settings.items()) + "."
        )
    lines.append(
        "- Splits are stable hashes of the examples: the test split never took part in "
        "training, early stopping or the choice of checkpoint."
    )
    return lines


def _kept(report: Mapping[str, Any], key: str) -> float | None:
    stages = report.get("stages") or []
    if not stages:
        return None
    last = stages[-1]
    values = (last.get("history") or {}).get(key) or []
    epoch = last.get("kept_epoch") or len(values)
    return float(values[epoch - 1]) if values and 0 < epoch <= len(values) else None


def _evaluation_lines(
    report: Mapping[str, Any],
    deployment: Sequence[Mapping[str, Any]],
    evaluation: Mapping[str, Any] | None,
) -> list[str]:
    split = report.get("evaluated_on") or (evaluation or {}).get("split") or "test"
    top1 = report.get(f"{split}_top1", (evaluation or {}).get("top1"))
    rows = ["| split | top-1 |", "|---|---|"]
    train, validation = _kept(report, "accuracy"), _kept(report, "val_accuracy")
    if train is not None:
        rows.append(f"| train (the kept epoch, while training) | {train:.4f} |")
    if validation is not None:
        rows.append(f"| validation (the kept epoch) | {validation:.4f} |")
    images = (evaluation or {}).get("images")
    if top1 is not None:
        shown = f"{split} ({images:,} images)" if images else split
        rows.append(f"| {shown} | {top1:.4f} |")
    lines = rows if len(rows) > 2 else [f"No top-1 recorded for this export's {split} split."]
    measured = [r for r in deployment if r.get("top1") is not None]
    if deployment:
        lines += [
            "",
            f"Per format, top-1 on the {split} split with the runtime users deploy it with "
            "(the SavedModel: TensorFlow; `.tflite`: LiteRT; `.onnx`: onnxruntime):",
            "",
            "| format | file | MB | top-1 | parity |",
            "|---|---|---|---|---|",
        ]
        if top1 is not None:
            lines.append(f"| saved_model | saved_model.pb | - | {top1:.4f} | reference |")
        for r in deployment:
            value = "not measured" if r.get("top1") is None else f"{r['top1']:.4f}"
            parity = (
                f"top-1 agreement {r['parity']:.3f}"
                if r["format"].endswith("int8")
                else f"max difference {r['parity']:.2g}"
            )
            lines.append(
                f"| {r['format']} | {r['file']} | {r['bytes'] / 1e6:.2f} | {value} | {parity} |"
            )
        if not measured:
            lines.append("")
            lines.append("Top-1 per format was not measured (no evaluation images were given).")
    return lines


def _verification_lines(report: Mapping[str, Any], manifest: Mapping[str, Any]) -> list[str]:
    verify = report.get("verify") or {}
    variables = ((manifest.get("manifest") or {}).get("variables")) or []
    frozen = sum(1 for v in variables if v.get("frozen"))
    lines = [
        f"- Weights manifest: {len(variables)} variables hashed (sha256), {frozen} recorded "
        "as frozen; deployed files hashed under `deployed`.",
    ]
    if verify.get("checks"):
        outcome = "passed" if verify.get("passed") else "FAILED"
        lines.append(f"- `zoo verify` at export time: {outcome}.")
        for check in verify["checks"]:
            mark = {True: "ok", False: "FAILED", None: "not run"}[check.get("passed")]
            lines.append(f"  - {check.get('name')}: {mark}: {check.get('detail')}")
    else:
        lines.append("- The export was verified before it was put in place (`zoo run`/export).")
    lines.append(
        "- Re-check it any time: `zoo verify EXPORT_DIR --require-proof` (frozen weights "
        "bitwise against the registry's pinned pretrained file, parity of every format, "
        "the `.tflite` metadata)."
    )
    return lines
