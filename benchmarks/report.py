"""Markdown table and PNG chart of one benchmark run's JSON (see :mod:`benchmarks.run`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.common import cpu_isa

MODE_LABELS = {
    "float32": "float32",
    "float32_folded": "float32, BatchNorm folded",
    "float32_xla": "float32 + XLA",
    "mixed_bfloat16": "mixed bfloat16",
}


def write_all(doc: dict[str, Any], json_path: Path) -> list[Path]:
    """Writes ``<stem>.md`` and ``<stem>.png`` beside ``json_path``; returns their paths."""
    md_path = json_path.with_suffix(".md")
    md_path.write_text(markdown(doc), encoding="utf-8")
    png_path = json_path.with_suffix(".png")
    chart(doc, png_path)
    return [md_path, png_path]


def _num(value: Any, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and abs(value) < 10 ** (-digits) and value != 0:
        return f"{value:.1e}{suffix}"
    return f"{value:.{digits}f}{suffix}"


def _why(section: Any) -> str:
    if not isinstance(section, dict):
        return "not run"
    return section.get("skipped") or section.get("error") or ""


def markdown(doc: dict[str, Any]) -> str:
    """The run as Markdown: machine, targets with raw figures, then one table per part."""
    from benchmarks.distribute_bench import markdown_section

    parts = [_machine_md(doc), _device_md(doc.get("device")), _targets_md(doc), _peak_md(doc)]
    parts += [_forward_md(doc)]
    parts += [serving_formats_md(doc.get("serving_formats"))]
    parts += [peer_md(doc.get("peer"), doc["machine"].get("cores"))]
    parts += [peer_head_stage_md(doc.get("peer_head_stage")), scale_md(doc.get("scale"))]
    parts += [markdown_section(doc), vit_md(doc.get("vit")), _notes_md()]
    return "\n\n".join(p for p in parts if p) + "\n"


def _machine_md(doc: dict[str, Any]) -> str:
    m, s = doc["machine"], doc["settings"]
    accel = ", ".join(m["accelerators"]) or "none"
    load = "/".join(f"{x:.1f}" for x in m["load_average"])
    load_end = "/".join(f"{x:.1f}" for x in m.get("load_average_end", []))
    return "\n".join(
        [
            f"# Benchmark run {m['date']}{' (--quick)' if s['quick'] else ''}",
            "",
            f"- Machine: {m['cpu']} ({', '.join(m['cpu_flags'])}), {m['cores']} cores, "
            f"{m['memory_gib']} GiB; accelerator: {accel}",
            f"- CPU ISA: {_isa(m)}",
            f"- Software: Python {m['python']}, TensorFlow {m['tensorflow']}, Keras "
            f"{m['keras']}, JAX {m['jax']}; Keras backend `{m['backend']}`",
            f"- Load average (1/5/15 min) at start {load}, at end {load_end}; "
            f"total {s['total_seconds']:.0f} s",
            f"- Not registered (skipped): {', '.join(s['not_registered']) or 'none'}",
        ]
    )


def _isa(machine: dict[str, Any]) -> str:
    """The machine's ISA as recorded, or derived from its flags (files written before)."""
    return machine.get("isa") or cpu_isa(machine.get("cpu_flags") or [])


def _device_md(device: Any) -> str:
    """One line: what ran the model side and its measured matmul peak (TFLOP/s)."""
    if not isinstance(device, dict):
        return ""
    tflops = device.get("peak_tflops") or {}
    peak = ", ".join(f"{k} {_num(v, 1)}" for k, v in tflops.items() if v is not None)
    size = device.get("matmul_size")
    where = f" ({size}^3 matmul)" if size else ""
    return (
        f"- Device: {device.get('name')} ({device.get('kind')}); peak TFLOP/s{where}: {peak or '-'}"
    )


def _raw(doc: dict[str, Any], key: str) -> str:
    section = doc.get(key.split(".")[0], {})
    if key == "head_stage.speedup":
        return (
            f"plain fit {_num(section.get('plain_seconds'))} s vs zoo cached features "
            f"{_num(section.get('zoo_seconds'))} s ({section.get('backbone')}, "
            f"{section.get('images')} images, {section.get('epochs')} epochs)"
        )
    if key == "fine_tune.speedup":
        return (
            f"plain fit {_num(section.get('plain_images_per_second'))} img/s vs zoo "
            f"{_num(section.get('zoo_images_per_second'))} img/s "
            f"({section.get('backbone')}, zoo settings {section.get('zoo_settings')})"
        )
    if key.startswith("prefix_cache"):
        rows = []
        for name, r in section.items():
            if isinstance(r, dict) and "plain_seconds" in r:
                rows.append(
                    f"{name}: {_num(r.get('plain_seconds'))} s vs "
                    f"{_num(r.get('cached_seconds'))} s, diff {_num(r.get('max_weight_diff'), 2)}, "
                    f"bound {_num(r.get('speedup_bound'))}x"
                )
        return "; ".join(rows)
    if key == "serving.ratio":
        return (
            f"SavedModel {_num(section.get('serving_images_per_second'))} img/s vs Keras "
            f"predict {_num(section.get('keras_images_per_second'))} img/s; export + verify "
            f"{_num(section.get('export_verify_seconds'))} s"
        )
    if key == "pipeline.ratio":
        return (
            f"decode + resize {_num(section.get('images_per_second'))} img/s vs fine-tune "
            f"{_num(section.get('fine_tune_images_per_second'))} img/s "
            f"({section.get('fine_tune_backbone')}, {section.get('image_size')})"
        )
    return ""


def _targets_md(doc: dict[str, Any]) -> str:
    rows = ["## Ratios and targets", "", "| ratio | value | target | met | raw figures |"]
    rows.append("|---|---|---|---|---|")
    for key, t in doc["targets"].items():
        value = t["value"]
        digits = 2 if "diff" not in key else 1
        shown = _num(value, digits, "" if "diff" in key else "x")
        met = {True: "yes", False: "**no**", None: "-"}[t["met"]]
        raw = _raw(doc, key) if value is not None else _why(doc.get(key.split(".")[0]))
        rows.append(f"| `{key}` | {shown} | {t['target']} | {met} | {raw} |")
    return "\n".join(rows)


def _peak_md(doc: dict[str, Any]) -> str:
    peak = doc.get("peak", {})
    if "float32" not in peak:
        return f"## Peak\n\n{_why(peak)}"
    rows = [
        f"## Peak ({peak['size']}x{peak['size']} matmul, median GFLOP/s)",
        "",
        "| dtype | GFLOP/s | first call (s) |",
        "|---|---|---|",
    ]
    for dtype in ("float32", "bfloat16"):
        p = peak[dtype]
        rows.append(f"| {dtype} | {_num(p['gflops'])} | {_num(p['first_call_seconds'], 2)} |")
    return "\n".join(rows)


def _forward_md(doc: dict[str, Any]) -> str:
    forward = doc.get("forward", {})
    if not forward or "skipped" in forward:
        return f"## Forward throughput\n\n{_why(forward)}"
    head = "| backbone | input | batch | GMACs | " + " | ".join(MODE_LABELS.values())
    rows = [
        "## Forward throughput (images/s, median; in brackets: fraction of the matching peak)",
        "",
        head + " | first call (s) |",
        "|---" * (5 + len(MODE_LABELS)) + "|",
    ]
    for name, r in forward.items():
        if "error" in r or "skipped" in r:
            rows.append(f"| {name} | {_why(r)} |" + " |" * (3 + len(MODE_LABELS)))
            continue
        cells, firsts = [], []
        for mode in MODE_LABELS:
            m = r.get(mode, {})
            if "images_per_second" not in m:
                cells.append(_why(m) or "-")
                continue
            frac = m.get("fraction_of_peak")
            cells.append(
                _num(m["images_per_second"]) + (f" ({frac:.0%})" if frac is not None else "")
            )
            firsts.append(_num(m["first_call_seconds"]))
        size = "x".join(str(s) for s in r["input_size"])
        rows.append(
            f"| {name} | {size} | {r['batch_size']} | {_num(r['gmacs'], 2)} | "
            + " | ".join(cells)
            + f" | {' / '.join(firsts)} |"
        )
    return "\n".join(rows)


SERVING_COLUMNS = ("saved_model", "tflite", "tflite-fp16", "tflite-int8", "onnx", "timm")


def serving_formats_md(section: Any) -> str:
    """The serving-formats table: images/s per format and timm, the fastest, its ratios."""
    title = "## Serving throughput per format (images/s, median)"
    if not isinstance(section, dict) or "skipped" in section or "error" in section:
        return f"{title}\n\n{_why(section)}"
    head = "| backbone | batch | " + " | ".join(SERVING_COLUMNS)
    rows = [title, "", head + " | fastest | vs SavedModel (>= 1.5) | vs timm (>= 1) |"]
    rows.append("|---" * (len(SERVING_COLUMNS) + 5) + "|")
    for name, r in section.items():
        batches = [k for k in r if k.startswith("batch_")] if isinstance(r, dict) else []
        if not batches:
            rows.append(f"| {name} | {_why(r)} |" + " |" * (len(SERVING_COLUMNS) + 3))
        for key in batches:
            b = r[key]
            rates = b["images_per_second"]
            cells = [
                _num(v) if isinstance(v, (int, float)) else (v or "-")
                for v in (rates.get(c) for c in SERVING_COLUMNS)
            ]
            ratios = [
                _ratio_cell(b["targets"][t]) for t in ("fastest_vs_saved_model", "fastest_vs_timm")
            ]
            rows.append(
                f"| {name} | {key.removeprefix('batch_')} | "
                + " | ".join(cells)
                + f" | {b['fastest']} | "
                + " | ".join(ratios)
                + " |"
            )
    return "\n".join(rows)


def _peak_load(row: dict[str, Any]) -> float | None:
    """The highest 1-minute load average recorded around a measurement (``meta``)."""
    meta = row.get("meta") or {}
    loads = [meta[k][0] for k in ("load_before", "load_after") if meta.get(k)]
    return max(loads) if loads else None


def peer_md(section: Any, cores: int | None = None) -> str:
    """zoo beside timm: forward and top-2 training step images/s and zoo / timm.

    The last column is the highest 1-minute load average around timm's measurement; above
    ``cores`` the machine was oversubscribed, and a note says what that does to timm.
    """
    title = "## Peer: timm (PyTorch), same backbone, input and batch (images/s, median)"
    if not isinstance(section, dict) or "skipped" in section or "error" in section:
        return f"{title}\n\n{_why(section)}"
    rows = [title, "", "| backbone | zoo forward | timm forward | zoo / timm | zoo train step "]
    rows[-1] += "| timm train step | zoo / timm | zoo train settings | zoo forward mode | timm "
    rows[-1] += "| load (1 min) at timm |"
    rows.append("|---" * 11 + "|")
    oversubscribed = []
    for name, r in section.items():
        if _why(r):
            rows.append(f"| {name} | {_why(r)} |" + " |" * 9)
            continue
        load = _peak_load(r)
        if load is not None and cores and load > cores:
            oversubscribed.append(name)
        cells = [
            _num(r.get("zoo_forward_images_per_second")),
            _num(r.get("forward_images_per_second")),
            _num(r.get("forward_ratio"), 2, "x"),
            _num(r.get("zoo_train_images_per_second")),
            _num(r.get("train_step_images_per_second")),
            _num(r.get("train_ratio"), 2, "x"),
            str(r.get("zoo_train_settings") or "-"),
            str(r.get("zoo_forward_mode") or "-"),
            f"{r.get('device', 'cpu')}, {r.get('precision', 'float32')}"
            + (", torch.compile" if r.get("compiled") else ""),
            _num(load) + (" (**over the cores**)" if name in oversubscribed else ""),
        ]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    if oversubscribed:
        rows += [
            "",
            f"The machine was oversubscribed (load above its {cores} cores) while timm ran for "
            f"{', '.join(oversubscribed)}. PyTorch's OpenMP threads wait for each other at "
            "every parallel region, and slow down far more than TensorFlow's thread pool when "
            "other processes take the cores (on 2 cores at load 10, a 2-thread "
            "tf_efficientnet_lite0 forward ran at 0.7 img/s, a 1-thread one at 49.5 img/s): "
            "those rows' zoo / timm overstate zoo.",
        ]
    return "\n".join(rows)


def peer_head_stage_md(section: Any) -> str:
    """zoo's head stage (cached features) beside timm's training loop, wall seconds."""
    if not isinstance(section, dict) or section.get("seconds") is None:
        return ""
    return "\n".join(
        [
            "## Head stage beside timm (frozen backbone, linear head; wall seconds)",
            "",
            "| backbone, input | images x epochs | zoo (feature cache) | timm loop | timm / zoo |",
            "|---|---|---|---|---|",
            f"| {section['backbone']}, {section['input_size'][0]} | {section['images']} x "
            f"{section['epochs']} | {_num(section.get('zoo_seconds'))} s | "
            f"{_num(section.get('seconds'))} s | {_num(section.get('ratio'), 2, 'x')} |",
        ]
    )


def _gib(value: Any) -> str:
    return "-" if value is None else f"{value / 2**30:.2f}"


def vit_md(section: Any) -> str:
    """The ViT-S/14 rows (benchmarks/vit_bench.py): zoo beside timm, full and LoRA."""
    if not isinstance(section, dict) or "skipped" in section or "error" in section:
        return ""
    from benchmarks.vit_bench import section_md

    return section_md(section)


def scale_md(section: Any) -> str:
    """The scale rows: the main job's stages on synthetic folders of each size."""
    if not isinstance(section, dict) or "skipped" in section or "error" in section:
        return ""
    rows = [
        "## Scale: the main job's stages on synthetic folders (32x32 PNGs)",
        "",
        "| images | train / val / test | scan + split (s) | caches (cut: GiB, where) | cache "
        "build (img/s) | head stage (img/s) | fine-tune stage (img/s) | evaluate (s) | wall (s) "
        "| s per image | s per image, model build excluded | peak RSS (GiB) | of it anonymous "
        "(GiB) | peak RSS in step |",
        "|---" * 14 + "|",
    ]
    for size, r in section.items():
        if size == "summary":
            continue
        if _why(r):
            rows.append(f"| {int(size):,} | {_why(r)} |" + " |" * 12)
            continue
        stages = list(r["stages"].values())
        rates = [_num(st.get("images_per_second")) for st in stages[:2]] + ["-"] * (2 - len(stages))
        cache = r.get("cache") or {}
        used = [st["cache"] for st in stages if (st.get("cache") or {}).get("used")]
        by_cut = {c["cut"]: f"{c['cut']}: {_gib(c['bytes'])}, {c['where']}" for c in used}
        cuts = list(by_cut.values())
        peaks = r["rss"].get("peak_by_step_bytes") or {}
        step = max(peaks, key=peaks.get) if peaks else "-"
        cells = [
            f"{int(size):,}",
            f"{r['train_images']:,} / {r['validation_images']:,} / {r['test_images']:,}",
            _num(r.get("scan_split_seconds"), 2),
            "; ".join(cuts) or _gib(cache.get("bytes")),
            _num(cache.get("images_per_second")),
            *rates,
            _num(r["timings"].get("evaluate")),
            _num(r.get("wall_seconds")),
            f"{r['seconds_per_image'] * 1e3:.2f} ms",
            f"{r['variable_seconds_per_image'] * 1e3:.2f} ms",
            _gib(r["rss"]["peak_bytes"]),
            _gib(r["rss"].get("peak_anon_bytes")),
            step,
        ]
        rows.append("| " + " | ".join(cells) + " |")
    summary = section.get("summary") or {}
    if summary.get("spread") is not None:
        rows += [
            "",
            (
                f"Through the two largest sizes, wall seconds = "
                f"{summary['fixed_seconds']:.0f} s + "
                f"{summary['marginal_seconds_per_image'] * 1e3:.2f} ms x images. "
                if summary.get("marginal_seconds_per_image") is not None
                else ""
            )
            + f"Seconds per image (model build excluded), largest over smallest: "
            f"{summary['spread']:.2f} ({'within' if summary['flat'] else '**not** within'} "
            f"20%). Peak RSS at {summary['largest']:,} images minus the cache's memory budget: "
            f"{_gib(summary['rss_over_budget_bytes'])} GiB "
            f"({'within' if summary['rss_bounded'] else '**over**'} 1 GiB)"
            + (
                f"; its anonymous part (without file-backed pages such as a memmapped "
                f"cache's) minus the budget: {_gib(summary['anon_over_budget_bytes'])} GiB "
                f"({'within' if summary['anon_bounded'] else '**over**'} 1 GiB)."
                if summary.get("anon_over_budget_bytes") is not None
                else "."
            ),
        ]
    return "\n".join(rows)


def _ratio_cell(target: dict[str, Any]) -> str:
    if target["value"] is None:
        return "-"
    return _num(target["value"], 2, "x") + ("" if target["met"] else " (**missed**)")


def _notes_md() -> str:
    return "\n".join(
        [
            "## What the rows mean",
            "",
            "- Peak: a large square matmul in the backend's compiled function; the machine's "
            "own limit for dense arithmetic.",
            "- Forward: backbone only (no head), random weights, inside the compiled predict "
            "function; GFLOP/s = 2 x GMACs x images/s; fraction of the float32 peak "
            "(bfloat16 peak for mixed bfloat16).",
            "- head_stage: frozen backbone, a linear head, N epochs on the same images. Plain "
            "Keras fit over the full model (as in the Keras transfer-learning guide) vs zoo's "
            "cached backbone features (features computed once, then the head trained on them).",
            "- fine_tune: top 2 blocks unfrozen, BatchNorm frozen, no cache; training "
            "images/s of plain Keras fit vs zoo with the settings it picks for the device.",
            "- prefix_cache: top 2 blocks unfrozen, 5 epochs: plain fit (prefix in inference "
            "mode) vs zoo training the top blocks on cached prefix activations; "
            "max_weight_diff is the largest absolute difference between the two trained models; "
            "bound is the speedup if every multiply-accumulate cost the same (prefix P and "
            "suffix S GMACs, backward = 2x forward): epochs (P + 3S) / (P + 3S epochs).",
            "- serving: the exported SavedModel's serving_default signature vs the in-memory "
            "Keras model's predict, same batches.",
            "- pipeline: JPEG decode + resize images/s (zoo.data pipeline) vs the training "
            "images/s of the fastest fine-tune measured; above 1 the model never waits.",
            "- serving_formats: a classifier (random weights) as the SavedModel's serving_default, "
            "LiteRT (XNNPACK, threads = cores) float32 / float16 / int8 (calibrated on random "
            "pixels), onnxruntime (CPU), and timm eager (channels-last, inference_mode) on the "
            "same architecture, same float32 pixels, one process per backbone.",
            "- scale: the built-in main job recipe run end to end (`run_recipe`, export off, "
            "each stage's epochs as the settings say) on a folder of synthetic 32x32 PNGs in "
            "10 class folders; scan + split is the run's data step, cache build images/s is "
            "over train + validation, s per image is the run's wall time over all images.",
        ]
    )


def chart(doc: dict[str, Any], path: Path) -> None:
    """Two panels: forward images/s per backbone and mode; each ratio against its target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    _forward_panel(left, doc.get("forward", {}))
    _ratio_panel(right, doc["targets"])
    fig.suptitle(
        f"{doc['machine']['cpu']} ({_isa(doc['machine'])}), {doc['machine']['cores']} cores, "
        f"{doc['machine']['backend']}, {doc['machine']['date'][:10]}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _forward_panel(ax: Any, forward: dict[str, Any]) -> None:
    names = [n for n, r in forward.items() if isinstance(r, dict) and "input_size" in r]
    ax.set_title("Forward throughput")
    if not names:
        ax.text(0.5, 0.5, _why(forward) or "not run", ha="center", transform=ax.transAxes)
        return
    width = 0.8 / len(MODE_LABELS)
    for i, (mode, label) in enumerate(MODE_LABELS.items()):
        values = [forward[n].get(mode, {}).get("images_per_second") or 0 for n in names]
        ax.bar([x + i * width for x in range(len(names))], values, width, label=label)
    ax.set_xticks([x + width for x in range(len(names))], names, rotation=20, fontsize=8)
    ax.set_ylabel("images/s (median)")
    ax.legend(fontsize=8)


def _ratio_panel(ax: Any, targets: dict[str, Any]) -> None:
    keys = [k for k, t in targets.items() if t["target"].startswith(">=")]
    values = [targets[k]["value"] or 0 for k in keys]
    colors = ["tab:green" if targets[k]["met"] else "tab:red" for k in keys]
    ax.bar(range(len(keys)), values, color=colors)
    for x, k in enumerate(keys):
        goal = float(targets[k]["target"].split()[1])
        ax.hlines(goal, x - 0.4, x + 0.4, colors="black", linestyles="dashed")
        if targets[k]["value"] is not None:
            ax.annotate(f"{targets[k]['value']:.2f}", (x, values[x]), ha="center", va="bottom")
    ax.set_xticks(range(len(keys)), keys, rotation=20, fontsize=8)
    ax.set_ylabel("ratio (dashed: target)")
    ax.set_title("Ratios (green: target met)")
