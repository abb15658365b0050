"""``report.md``: the report in Markdown, results first, linking the plots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from recipes.report.run_report import (
    DataReport,
    RunReport,
    SettingsReport,
    StageReport,
    VerifyReport,
    accuracy_key,
)
from recipes.text import format_cell, markdown_table

__all__ = ["render_markdown"]


def _last(history: Mapping[str, Sequence[float]], key: str | None) -> float | None:
    values = history.get(key, []) if key else []
    return float(values[-1]) if values else None


def render_markdown(report: RunReport, plots: Mapping[str, str]) -> str:
    """The report as Markdown: results first, then settings, stages, classes, verification.

    Args:
        report: the run's report.
        plots: plot name -> path relative to the report (``"training_curves"``,
            ``"confusion_matrix"``, ``"top_losses"``).
    """
    lines = [f"# {report.recipe}", ""]
    if report.description:
        lines += [report.description, ""]
    lines += _result_section(report)
    if "training_curves" in plots:
        lines += [f"![training curves]({plots['training_curves']})", ""]
    lines += _settings_section(report.settings)
    lines += _stages_section(report.stages)
    lines += _per_class_section(report)
    if "confusion_matrix" in plots:
        lines += [f"![confusion matrix]({plots['confusion_matrix']})", ""]
    lines += _errors_section(report, plots.get("top_losses"))
    lines += _calibration_section(report, plots.get("reliability"))
    lines += _verify_section(report.verify)
    lines += _deployment_section(report.deployment)
    lines += _data_section(report.data)
    if report.timings:
        lines += ["", "## Timings", ""]
        lines += markdown_table(
            ["step", "seconds"], [[k, f"{v:.1f}"] for k, v in report.timings.items()]
        )
    lines.append("")
    return "\n".join(lines)


def _errors_section(report: RunReport, grid: str | None, rows: int = 20) -> list[str]:
    """Where the model is wrong: the most-confused pairs and the highest-loss images."""
    ev = report.evaluation
    confused, losses = ev.get("most_confused"), ev.get("top_losses")
    if not confused and not losses:
        return []
    split = report.evaluated_on
    lines = ["## Where the model is wrong", ""]
    if confused:
        lines += ["Most-confused pairs:", ""]
        lines += markdown_table(
            ["true", "predicted as", "images", "share of the true class"],
            [[c["true"], c["predicted"], c["count"], c["share"]] for c in confused],
        )
        lines.append("")
    if losses:
        lines += [
            f"The {split} images with the highest loss (the model most sure of a wrong "
            "class first): a mislabelled image usually shows up here. report.json lists "
            f"{len(losses)}.",
            "",
        ]
        if grid:
            lines += [f"![highest-loss images]({grid})", ""]
        lines += markdown_table(
            ["image", "true", "predicted", "probability", "true class probability", "loss"],
            [
                [
                    f"`{e['identity']}`" if e.get("identity") else e["index"],
                    e["true"],
                    e["predicted"],
                    e["probability"],
                    e["true_probability"],
                    e["loss"],
                ]
                for e in losses[:rows]
            ],
        )
        lines.append("")
    return lines


def _calibration_section(report: RunReport, diagram: str | None) -> list[str]:
    """Temperature scaling: the temperature, ECE and NLL before and after."""
    calibrated = report.evaluation.get("calibration")
    if not calibrated:
        return []
    split = report.evaluated_on
    fitted = calibrated.get("fitted_on", "validation")
    lines = ["## Calibration", ""]
    lines += [
        f"Temperature {calibrated['temperature']:.3f}, fitted on the {fitted} split after "
        "the last stage (Guo et al. 2017): softmax(logits / T). It changes the "
        "probabilities, never the ranking of the classes, so top-1 is the same. Every "
        "exported format's probabilities are the calibrated ones; the logits stay as trained.",
        "",
    ]
    lines += markdown_table(
        ["", f"{split} ECE ({calibrated['bins']} bins)", f"{split} NLL"],
        [
            ["as trained", *(format_cell(calibrated[k], 4) for k in ("ece_before", "nll_before"))],
            [
                "temperature-scaled",
                *(format_cell(calibrated[k], 4) for k in ("ece_after", "nll_after")),
            ],
        ],
    )
    lines.append("")
    if fitted == split:
        lines += [
            f"Fitted and measured on the same {split} split, so the 'after' figures are "
            "optimistic.",
            "",
        ]
    if diagram:
        lines += [f"![reliability diagram]({diagram})", ""]
    return lines


def _per_class_section(report: RunReport) -> list[str]:
    """Per-class precision and recall; for a multi-label run also AP and F1."""
    per_class = report.evaluation.get("per_class")
    if not per_class:
        return []
    lines = [f"## {report.evaluated_on.capitalize()} set, per class", ""]
    if report.metric != "mAP":
        balanced = report.evaluation.get("balanced_accuracy")
        if balanced is not None:
            lines += [
                f"Balanced accuracy {format_cell(balanced)}: the mean of the classes' recall, "
                "so every class counts the same however many images it has.",
                "",
            ]
        lines += markdown_table(
            ["class", "precision", "recall", "images"],
            [[c["class"], c["precision"], c["recall"], c["support"]] for c in per_class],
        )
        return [*lines, ""]
    ev = report.evaluation
    lines += [
        f"mAP {format_cell(ev.get('mAP'))} (mean of the classes' AP); at threshold "
        f"{ev.get('threshold')}: F1 micro {format_cell(ev.get('f1_micro'))}, macro "
        f"{format_cell(ev.get('f1_macro'))}, exact match {format_cell(ev.get('exact_match'))}.",
        "",
    ]
    lines += markdown_table(
        ["class", "AP", "precision", "recall", "F1", "images with it"],
        [
            [c["class"], c["ap"], c["precision"], c["recall"], c["f1"], c["support"]]
            for c in per_class
        ],
    )
    return [*lines, ""]


def _result_section(report: RunReport) -> list[str]:
    split = report.evaluated_on
    verified = {True: "yes", False: "**NO**"}.get(report.verify.passed, "not run")
    lines = ["## Result", ""]
    ev = report.evaluation
    extra = [k for k in ("top5", "balanced_accuracy") if ev.get(k) is not None]
    names = {"top5": f"{split} top-5", "balanced_accuracy": "balanced accuracy"}
    lines += markdown_table(
        [
            report.headline,
            *[names[k] for k in extra],
            f"{split} images",
            "backbone",
            "input",
            "wall time",
            "verified",
        ],
        [
            [
                report.score,
                *[ev[k] for k in extra],
                report.evaluation.get("images"),
                report.backbone,
                "x".join(str(v) for v in report.input_shape[:2]) or "-",
                f"{report.wall_seconds:.0f} s",
                verified,
            ]
        ],
    )
    tta = ev.get("tta")
    if tta:
        lines += [
            "",
            f"Test-time augmentation ({', '.join(tta['views'])}): {split} top-1 "
            f"{format_cell(report.score)} averaging the views' logits, "
            f"{format_cell(tta['top1_without'])} on the image alone; "
            f"{tta['seconds']:.1f} s for the extra views. The export predicts one view.",
        ]
    if split != "test":
        lines += [
            "",
            f"Evaluated on the {split} split, as the recipe asked ([data] evaluate_on): "
            "it guided training (early stopping, each stage's best epoch), so this is not a "
            "held-out test result.",
        ]
    return [*lines, ""]


def _settings_section(settings: SettingsReport) -> list[str]:
    """Mixed precision and XLA as chosen; the probe's times when ``"auto"`` chose them."""
    lines = ["## Settings", ""]
    lines += markdown_table(
        ["setting", "asked", "used"],
        [
            [
                "mixed precision",
                settings.mixed_precision_asked,
                settings.mixed_precision or "float32",
            ],
            ["XLA (jit_compile)", settings.jit_compile_asked, settings.jit_compile],
            [
                "inference engine (evaluation)",
                settings.inference_engine_asked,
                (settings.evaluation_engine or {}).get("engine", "-"),
            ],
            [
                "distribute",
                settings.distribute_asked,
                f"{settings.strategy}, {settings.replicas} replica(s) on "
                f"{settings.workers} worker(s)",
            ],
            [
                "batch (global / per replica)",
                settings.global_batch,
                f"{settings.global_batch} / {settings.per_replica_batch}",
            ],
        ],
    )
    lines.append("")
    if settings.replicas > 1:
        lines += ["Learning rates are as written, not rescaled for the replicas.", ""]
    if settings.logical_cpu_devices:
        lines += [
            f"The CPU was split into {settings.logical_cpu_devices} logical devices (a "
            "testing aid: they share the same cores, so this measures overhead, not speed).",
            "",
        ]
    lines += _engine_lines(settings.evaluation_engine)
    probe = settings.probe or {}
    for key, value in probe.items():
        rows = value if isinstance(value, list) else None
        if rows and all(isinstance(r, Mapping) for r in rows):
            header = list(dict.fromkeys(k for r in rows for k in r))
            lines += [f"probe {key}:", ""]
            lines += markdown_table(header, [[r.get(k) for k in header] for r in rows])
            lines.append("")
        else:
            lines.append(f"- probe {key}: {format_cell(value, 4)}")
    if probe:
        lines.append("")
    return lines


def _engine_lines(engine: Mapping[str, Any] | None) -> list[str]:
    """The evaluation engine's probe: why, and each candidate's images/s and parity."""
    if not engine:
        return []
    lines = [f"Evaluation engine: {engine.get('engine')} ({engine.get('reason')})."]
    tried = [c for c in engine.get("candidates") or [] if isinstance(c, Mapping)]
    batch = engine.get("batch_size") or 0
    if tried:
        rows = [
            [
                c.get("name"),
                format_cell(batch / c["seconds_per_batch"], 1)
                if c.get("seconds_per_batch")
                else "-",
                f"{c['relative_error']:.1e}" if c.get("relative_error") is not None else "-",
                "yes" if c.get("agrees") else f"no {c.get('error') or ''}".strip(),
            ]
            for c in tried
        ]
        lines += ["", *markdown_table(["candidate", "images/s", "relative error", "agrees"], rows)]
        lines.append("")
        lines.append(
            f"Relative error: max|a - b| / max|b| against TensorFlow as built on a probe batch "
            f"of {batch} images; a candidate is used within {engine.get('parity_rtol')}."
        )
    for name, why in (engine.get("left_out") or {}).items():
        lines.append(f"- {name} not tried: {why}")
    return [*lines, ""]


def _stages_section(stages: Sequence[StageReport]) -> list[str]:
    rows = []
    for stage in stages:
        acc = accuracy_key(stage.history)
        rows.append(
            [
                stage.name,
                stage.policy_text(),
                len(stage.history.get("loss", [])),
                _last(stage.history, acc),
                _last(stage.history, f"val_{acc}" if acc else None),
                f"{stage.seconds:.1f}",
                format_cell(stage.images_per_second, 1),
                stage.cache.text(),
            ]
        )
    header = ["stage", "policy", "epochs", "train acc", "val acc", "seconds", "images/s", "cache"]
    lines = ["## Stages", "", *markdown_table(header, rows), ""]
    shares = [f"- {s.name}: {s.trainable_text()}" for s in stages if s.total_params]
    if shares:
        lines += ["Trainable parameters as a share of the model:", "", *shares, ""]
    kept = [f"- {s.name}: {s.kept_reason}" for s in stages if s.kept_reason]
    if kept:
        lines += ["Weights each stage ended with:", "", *kept, ""]
    lines += _ema_lines(stages)
    return lines


def _ema_lines(stages: Sequence[StageReport]) -> list[str]:
    """Validation with the moving average of the weights beside the raw weights."""
    rows = []
    for stage in stages:
        if stage.ema is None or not stage.without_ema:
            continue
        acc = accuracy_key(stage.history)
        key = f"val_{acc}" if acc else "val_loss"
        rows.append(
            [
                stage.name,
                stage.ema,
                key,
                _last(stage.history, key),
                stage.without_ema.get(key),
            ]
        )
    if not rows:
        return []
    header = ["stage", "EMA momentum", "metric", "last epoch, EMA", "last epoch, raw weights"]
    return [
        "Moving average of the weights (EMA), on validation:",
        "",
        *markdown_table(header, rows),
        "",
    ]


def _verify_section(verify: VerifyReport) -> list[str]:
    lines = ["## Verification", ""]
    if verify.passed is None:
        lines.append(verify.note or "not run")
    else:
        lines.append(f"passed: {'yes' if verify.passed else 'no'}")
        lines += [f"- {failure}" for failure in verify.failures]
    return [*lines, ""]


def _deployment_section(deployment: list[dict[str, Any]]) -> list[str]:
    if not deployment:
        return []
    header = ["format", "file", "MB", "parity", "top-1", "drop", "batch-1 ms", "images/s"]
    rows = [
        [
            d["format"],
            d["file"],
            f"{d['bytes'] / 1e6:.2f}",
            f"{d['parity']:.3g}" + (" agree" if d["format"] == "tflite-int8" else ""),
            d.get("top1"),
            d.get("top1_drop"),
            f"{d['latency_ms']:.2f}",
            f"{d['images_per_s']:.0f} (batch {d['batch']})",
        ]
        for d in deployment
    ]
    return ["## Deployment", "", *markdown_table(header, rows), ""]


def _data_section(data: DataReport) -> list[str]:
    skipped = data.skipped
    lines = ["## Data", ""]
    lines += markdown_table(
        ["source", "train", "validation", "test", "skipped files"],
        [
            [
                data.source,
                data.train_images,
                data.validation_images,
                data.test_images,
                len(skipped),
            ]
        ],
    )
    if data.test_split:
        lines.append(f"- test split: {data.test_split}")
    lines += [f"- skipped `{s['path']}`: {s['reason']}" for s in skipped[:20]]
    if len(skipped) > 20:
        lines.append(f"- ... and {len(skipped) - 20} more (report.json lists them all)")
    return lines
