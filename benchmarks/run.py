"""Runs every benchmark measurement, one process each, and writes JSON, Markdown and a chart.

Usage::

    python -m benchmarks.run [--quick] [--backbones NAME ...] [--out DIR]
                             [--only peak,forward,...] [--backend tensorflow|jax]
                             [--peer timm]   (timm beside zoo: needs scripts/setup_peer.sh)
                             [--device gpu] [--budget SECONDS]
    python -m benchmarks.run --render benchmarks/results/<machine>-<date>.json

Each measurement runs in its own Python process (:mod:`benchmarks.measure`), so each
picks its Keras backend before Keras is imported and gives its memory back when done.
Model-side measurements (peak, forward, head stage, fine-tune, prefix cache) use
``--backend``; serving and the input pipeline need TensorFlow and are skipped, with the
reason, where it is absent. ``--device gpu`` (``benchmarks/device.sh``) sizes the run
for a GPU (:func:`device_settings`): batch 32 at native input sizes, zoo in mixed bfloat16
with XLA beside timm with AMP bfloat16 on CUDA. Measurements run in the order ``--only``
names them (the peer right after ``fine_tune``); past ``--budget`` seconds the rest are
skipped, with the reason, and the results written all the same (the peer still runs for
every backbone with a zoo row). Every ratio is measured within one run on one machine, as the
median of several repeats after a warm-up; compile/trace time is reported apart.

Writes ``<out>/<machine>-<date>.json``, ``.md`` (a table with medians and ratios) and
``.png`` (a chart). The JSON's stable keys: ``machine``, ``settings``, ``peak``,
``forward``, ``head_stage``, ``fine_tune``, ``prefix_cache``, ``serving``, ``pipeline``,
``serving_formats`` (per backbone; see :mod:`benchmarks.serving_bench`),
``peer``, ``device`` (the accelerator, its measured bf16 matmul TFLOP/s), ``targets``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks import report  # noqa: E402
from benchmarks.common import SKIP_NEEDS_TF, has_tensorflow, machine_info, machine_slug
from benchmarks.model_bench import MODES
from benchmarks.scale_bench import LARGE_SIZE as SCALE_LARGE
from benchmarks.scale_bench import SIZES as SCALE_SIZES
from benchmarks.scale_bench import scale_summary
from benchmarks.serving_bench import SERVING_BACKBONES
from benchmarks.timm_bench import peer_ratios

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "benchmarks" / "results"
FORWARD_BACKBONES = (
    "inception_v3",
    "resnet50",
    "mobilenet_v2",
    "efficientnet_b0",
    "efficientnet_lite0",
)
TRAIN_BACKBONES = ("efficientnet_lite0", "inception_v3")
# The Keras guide's own fine-tuning example unfreezes InceptionV3's top 2 blocks.
FINE_TUNE_HEADLINE = "inception_v3"
QUICK_PREFERENCE = ("efficientnet_lite0", "mobilenet_v2", "inception_v3")
MEASUREMENTS = (
    "peak",
    "forward",
    "head_stage",
    "fine_tune",
    "prefix_cache",
    "serving",
    "pipeline",
    "serving_formats",
    "distribute",
    "scale",
    "vit",
)
TF_ONLY = ("serving", "pipeline", "serving_formats", "distribute", "scale", "vit")
# Run only when named in --only: minutes to hours, and a cache of synthetic images on disk
# (scale); a ViT-S/14 in zoo and timm, six processes (vit, benchmarks/vit_bench.py).
ON_REQUEST = ("scale", "vit")

# (dotted key, comparison, target): the figure zoo aims for on each ratio.
TARGETS = (
    ("head_stage.speedup", ">=", 5.0),
    ("fine_tune.speedup", ">=", 1.3),
    ("prefix_cache.speedup", ">=", 3.0),
    ("prefix_cache.max_weight_diff", "<=", 1e-5),
    ("serving.ratio", ">=", 0.9),
    ("pipeline.ratio", ">=", 3.0),
)


# Keys every section carries (None when it did not run), so readers can rely on them.
STABLE_FIELDS = {
    "head_stage": ("plain_seconds", "zoo_seconds", "speedup"),
    "fine_tune": ("plain_images_per_second", "zoo_images_per_second", "speedup"),
    "prefix_cache": ("speedup", "max_weight_diff"),
    "serving": (
        "keras_images_per_second",
        "serving_images_per_second",
        "ratio",
        "export_verify_seconds",
    ),
    "pipeline": ("images_per_second", "fine_tune_images_per_second", "ratio"),
}


def settings(quick: bool) -> dict[str, Any]:
    """Sizes, repeats and epochs of a full or a ``--quick`` run."""
    if quick:
        return {
            "peak": {"size": 1024, "repeats": 3},
            "forward": {"batch_size": 4, "repeats": 2, "input_size": 96},
            "head_stage": {"images": 16, "epochs": 2, "batch_size": 8, "input_size": 96},
            "fine_tune": {
                "images": 16,
                "epochs": 2,
                "batch_size": 8,
                "input_size": 96,
                "probe": False,
            },
            "prefix_cache": {"images": 16, "epochs": 2, "batch_size": 8, "input_size": 96},
            "serving": {"images": 16, "batch_size": 8, "repeats": 2, "input_size": 96},
            "pipeline": {"images": 16, "jpeg_size": [160, 120], "repeats": 2},
            "serving_formats": {"batch_sizes": [1, 4], "repeats": 2, "input_size": 96},
            "distribute": {
                "images": 16,
                "epochs": 2,
                "batch_size": 8,
                "input_size": 96,
                "rounds": 1,
            },
            "scale": {"sizes": [200, 400], "epochs": [1, 1]},
            "vit": {"batch": 4, "size": 56, "repeats": 2},
        }
    return {
        "peak": {"size": 4096, "repeats": 5},
        "forward": {"batch_size": 16, "repeats": 5},
        "head_stage": {"images": 1024, "epochs": 10, "batch_size": 32},
        "fine_tune": {"images": 96, "epochs": 4, "batch_size": 16},
        "prefix_cache": {"images": 512, "epochs": 5, "batch_size": 32},
        "serving": {"images": 128, "batch_size": 32, "repeats": 5},
        "pipeline": {"images": 256, "jpeg_size": [500, 375], "repeats": 3},
        "serving_formats": {"batch_sizes": [1, 32], "repeats": 5},
        "distribute": {"images": 128, "epochs": 4, "batch_size": 16, "input_size": 128},
        "scale": {"sizes": list(SCALE_SIZES), "epochs": [1, 1]},
        "vit": {"batch": 16, "size": 224, "repeats": 5},
    }


BUDGET_SKIP = "skipped: the run's time budget was used up"

# GPU rows: zoo on Keras-JAX beside timm, at sizes a GPU keeps busy (the same for zoo and timm).
DEVICE_BACKBONES = ("efficientnet_lite0", "mobilenet_v2", "resnet50", "inception_v3")
DEVICE_ONLY = "peak,forward,fine_tune,head_stage"


def device_settings(quick: bool) -> dict[str, Any]:
    """Sizes of a ``--device gpu`` run: what :func:`settings` gives, GPU-sized.

    Forward: batch 32 at the backbone's native input, zoo in mixed bfloat16 (XLA: JAX always
    compiles), timed as a jitted call on device-resident input. Fine-tune: the top 2 blocks,
    batch 32, zoo given bfloat16 + XLA explicitly (its ``"auto"`` probe would compile six
    candidates, eager JAX among them: minutes per backbone) and no plain-Keras anchor (the
    peer is the comparison here). The peer: timm on CUDA with AMP bfloat16, channels-last.
    ``quick``: the same code paths at CPU-sized inputs, to test the harness without a GPU.
    """
    if quick:
        base = settings(True)
        size = base["forward"]["input_size"]
        batch, images, repeats = 4, 8, 2
    else:
        base = settings(False)
        size, batch, images, repeats = None, 32, 1024, 20
    forward = {"batch_size": batch, "repeats": repeats, "input_size": size}
    forward.update(modes=["mixed_bfloat16"], device_resident=True)
    train = {"images": images, "batch_size": batch, "input_size": size}
    return {
        **base,
        "peak": {"size": 1024 if quick else 8192, "repeats": 3 if quick else 10},
        "forward": forward,
        "fine_tune": {
            **train,
            "epochs": 3,
            "probe": False,
            "mixed_precision": "bfloat16",
            "jit_compile": True,
            "plain": False,
        },
        "head_stage": {**train, "epochs": 2 if quick else 5},
        "peer": {"device": "auto", "amp": "bfloat16", "compile": False},
    }


def registered(names: list[str]) -> tuple[list[str], list[str]]:
    """Splits ``names`` into (registered, not registered) backbones."""
    import zoo

    known = set(zoo.list_backbones())
    return [n for n in names if n in known], [n for n in names if n not in known]


def run_child(
    name: str, params: dict[str, Any], backend: str, timeout: float, log: Path
) -> dict[str, Any]:
    """Runs one measurement in a fresh process; returns its result (or an ``error`` dict)."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as tmp:
        result_path = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "benchmarks.measure", name]
        command += ["--params", json.dumps(params), "--result", str(result_path)]
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                command, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
            )
            output = proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as exc:
            parts = [exc.stdout or "", exc.stderr or ""]
            output = "".join(
                p.decode(errors="replace") if isinstance(p, bytes) else p for p in parts
            )
            proc = None
        with log.open("a", encoding="utf-8") as f:
            f.write(f"\n===== {name} {json.dumps(params)} ({backend})\n{output}")
        if proc is None:
            return {"error": f"timed out after {timeout:.0f} s"}
        if not result_path.exists():
            tail = output.strip().splitlines()[-3:]
            return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
        out = json.loads(result_path.read_text(encoding="utf-8"))
    out.setdefault("meta", {})["process_seconds"] = time.perf_counter() - start
    if "error" in out:
        return {"error": out["error"], "meta": out["meta"]}
    return {**out["result"], "meta": out["meta"]}


class Runner:
    """Plans and runs the selected measurements, then assembles one results dict."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        gpu = getattr(args, "device", "cpu") == "gpu"
        self.config = device_settings(args.quick) if gpu else settings(args.quick)
        self.results: dict[str, Any] = {}
        self.log = Path(args.log)
        self.budget = getattr(args, "budget", None)
        self.start = time.perf_counter()

    def child(self, name: str, params: dict[str, Any], backend: str | None = None) -> dict:
        backend = backend or self.args.backend
        label = f"{name} {params.get('backbone') or params.get('images') or ''}".strip()
        used = time.perf_counter() - self.start
        # The peer is exempt: cheap, and zoo's rows mean little without it (see _peer).
        if self.budget is not None and used > self.budget and name != "peer":
            print(f"[benchmarks] {label}: skipped (over the budget)", flush=True)
            return {"skipped": f"{BUDGET_SKIP} ({self.budget:.0f} s)"}
        print(f"[benchmarks] {label} ({backend}) ...", flush=True)
        out = run_child(name, params, backend, self.args.timeout, self.log)
        seconds = out.get("meta", {}).get("process_seconds", 0.0)
        status = out.get("error") or out.get("skipped") or "ok"
        print(f"[benchmarks] {label}: {status} ({seconds:.0f} s)", flush=True)
        return out

    def selected(self, name: str) -> bool:
        return name in self.args.only

    def run(self) -> dict[str, Any]:
        """Runs the selected measurements in ``--only``'s order; the peer after fine_tune."""
        for name in MEASUREMENTS:
            if not self.selected(name):
                self.results[name] = {"skipped": "not selected (--only)"}
        self.results["peer"] = {"skipped": "no --peer"}
        self.results["peer_head_stage"] = {"skipped": "no --peer", "ratio": None}
        # The peer's ratios read the forward and fine_tune rows: it runs after the later one.
        after = [n for n in self.args.only if n in ("forward", "fine_tune")]
        for name in self.args.only:
            if name in TF_ONLY and not has_tensorflow():
                self.results[name] = {"skipped": SKIP_NEEDS_TF}
            else:
                getattr(self, f"_{name}")()
            if self.args.peer and name == (after or self.args.only)[-1]:
                self.results["peer"] = self._peer()
        # timm's head-stage loop runs on the CPU only (not part of the GPU run's budget).
        if self.args.peer and self.selected("head_stage") and self.args.device == "cpu":
            self.results["peer_head_stage"] = self._peer_head_stage()
        for name, fields in STABLE_FIELDS.items():
            for field in fields:
                self.results[name].setdefault(field, None)
        return self.results

    def _params(self, name: str, **extra: Any) -> dict[str, Any]:
        return {**self.config[name], **extra}

    def _peak(self) -> None:
        self.results["peak"] = self.child("peak", self._params("peak"))

    def _forward(self) -> None:
        peak = self.results.get("peak", {})
        peak = {k: {"gflops": peak[k]["gflops"]} for k in ("float32", "bfloat16") if k in peak}
        modes = {"modes": self.args.forward_modes} if self.args.forward_modes else {}
        self.results["forward"] = {
            backbone: self.child(
                "forward", self._params("forward", backbone=backbone, peak=peak, **modes)
            )
            for backbone in self.args.backbones
        }

    def _head_stage(self) -> None:
        backbone = self.args.train_backbones[0]
        self.results["head_stage"] = self.child(
            "head_stage", self._params("head_stage", backbone=backbone)
        )

    def _fine_tune(self) -> None:
        """The fine-tune rows: each train backbone beside plain Keras; with ``--peer``, also
        every forward backbone, zoo alone (its row is the peer's training-step figure)."""
        per = {
            b: self.child("fine_tune", self._params("fine_tune", backbone=b))
            for b in self.args.train_backbones
        }
        for b in self.args.backbones if self.args.peer else ():
            if b not in per:
                per[b] = self.child("fine_tune", self._params("fine_tune", backbone=b, plain=False))
        headline = FINE_TUNE_HEADLINE
        headline = headline if headline in per else self.args.train_backbones[0]
        primary = per[headline]
        keys = ("plain_images_per_second", "zoo_images_per_second", "zoo_settings", "speedup")
        top = {k: primary.get(k) for k in keys}
        self.results["fine_tune"] = {
            "backbone": headline,
            **top,
            **_why_not(primary),
            **per,
        }

    def _prefix_cache(self) -> None:
        per = {
            b: self.child("prefix_cache", self._params("prefix_cache", backbone=b))
            for b in self.args.train_backbones
        }
        speedups = [r["speedup"] for r in per.values() if r.get("speedup") is not None]
        diffs = [r["max_weight_diff"] for r in per.values() if r.get("max_weight_diff") is not None]
        self.results["prefix_cache"] = {
            "speedup": min(speedups) if len(speedups) == len(per) else None,
            "max_weight_diff": max(diffs) if len(diffs) == len(per) else None,
            "aggregate": "speedup: the smallest over backbones; max_weight_diff: the largest",
            **_why_not(*per.values()),
            **per,
        }

    def _serving(self) -> None:
        backbone = self.args.train_backbones[0]
        params = self._params("serving", backbone=backbone)
        self.results["serving"] = self.child("serving", params, backend="tensorflow")

    def _serving_formats(self) -> None:
        """Each format and timm per serving backbone (both of them, unless --quick)."""
        backbones, _ = registered(list(SERVING_BACKBONES[: 1 if self.args.quick else None]))
        self.results["serving_formats"] = {
            b: self.child(
                "serving_formats", self._params("serving_formats", backbone=b), "tensorflow"
            )
            for b in backbones
        }

    def _peer(self) -> dict[str, Any]:
        """timm beside zoo's forward and fine_tune rows, at their batch and input sizes."""
        forward, fine_tune = self.config["forward"], self.config["fine_tune"]
        params = {"batch_size": forward["batch_size"], "input_size": forward.get("input_size")}
        params.update(train_batch_size=fine_tune["batch_size"], repeats=forward["repeats"])
        params["train_input_size"] = fine_tune.get("input_size")
        params.update(self.config.get("peer", {}))
        runs = {}
        for b in self.args.backbones:
            rows = [self.results.get(k, {}).get(b) or {} for k in ("forward", "fine_tune")]
            if all(BUDGET_SKIP in str(r.get("skipped", "")) for r in rows):
                runs[b] = {"skipped": f"{BUDGET_SKIP}: zoo's rows were not measured"}
            else:
                runs[b] = self.child("peer", {**params, "backbone": b})
        mode = "mixed_bfloat16" if params.get("amp") == "bfloat16" else None
        return peer_ratios(
            runs,
            self.results.get("forward", {}),
            self.results.get("fine_tune", {}),
            zoo_forward_mode=mode,
            peak=self.results.get("peak"),
        )

    def _peer_head_stage(self) -> dict[str, Any]:
        """timm's head-stage loop on the head_stage row's backbone, images and epochs;
        ``ratio`` = timm's seconds / zoo's (zoo caches features, timm recomputes them)."""
        zoo_row = self.results.get("head_stage") or {}
        if not zoo_row.get("zoo_seconds"):
            return {"skipped": "zoo's head stage was not measured", "ratio": None}
        backbone = self.args.train_backbones[0]
        timm = self.child("peer_head_stage", self._params("head_stage", backbone=backbone))
        seconds = timm.get("seconds")
        ratio = seconds / zoo_row["zoo_seconds"] if seconds else None
        return {**timm, "zoo_seconds": zoo_row["zoo_seconds"], "ratio": ratio}

    def _pipeline(self) -> None:
        """Decode + resize against the fastest fine-tune measured (the hardest to feed)."""
        import zoo

        fine_tune = self.results.get("fine_tune", {})
        rates = {
            b: fine_tune[b]["zoo_images_per_second"]
            for b in self.args.train_backbones
            if (fine_tune.get(b) or {}).get("zoo_images_per_second")
        }
        backbone = max(rates, key=rates.get) if rates else self.args.train_backbones[0]
        size = self.config["fine_tune"].get("input_size") or zoo.get_spec(backbone).input_size[0]
        params = self._params("pipeline", image_size=[size, size])
        out = self.child("pipeline", params, backend="tensorflow")
        train = rates.get(backbone)
        out["fine_tune_images_per_second"] = train
        out["fine_tune_backbone"] = backbone
        rate = out.get("images_per_second")
        out["ratio"] = rate / train if rate and train else None
        self.results["pipeline"] = out

    def _scale(self) -> None:
        """The main job's stages on synthetic folders of each size (``--scale-1m`` adds 1M)."""
        config = self.config["scale"]
        sizes = [*config["sizes"], *([SCALE_LARGE] if self.args.scale_1m else [])]
        rows = {
            str(n): self.child("scale", {"images": n, "epochs": config["epochs"]}, "tensorflow")
            for n in sizes
        }
        self.results["scale"] = {**rows, "summary": scale_summary(rows)}

    def _vit(self) -> None:
        """ViT-S/14 (DINOv2-small) in zoo and timm: forward, full fine-tune, LoRA, peak RSS."""
        from benchmarks.vit_bench import run_all

        print("[benchmarks] vit (zoo and timm, one process per measurement) ...", flush=True)
        self.results["vit"] = run_all(**self.config["vit"])

    def _distribute(self) -> None:
        """1 device vs mirrored on 2 logical CPUs (efficientnet_lite0 unless told)."""
        params = self._params("distribute", backbone=self.args.train_backbones[0])
        self.results["distribute"] = self.child("distribute", params, backend="tensorflow")


def _why_not(*parts: dict[str, Any]) -> dict[str, str]:
    """The first ``skipped`` / ``error`` among ``parts``, to show beside an aggregate."""
    for part in parts:
        for key in ("error", "skipped"):
            if key in part:
                return {key: f"{part.get('backbone', '')}: {part[key]}".lstrip(": ")}
    return {}


def device_section(info: dict[str, Any], peak: dict[str, Any] | None) -> dict[str, Any]:
    """The ``device`` section: what ran the model side, and its measured matmul peak.

    Args:
        info: :func:`benchmarks.common.machine_info`'s result.
        peak: the run's ``peak`` section (``measure_peak``), or None.

    Returns:
        ``kind`` ("gpu" or "cpu"), ``name`` (nvidia-smi's first GPU, else the CPU),
        ``devices`` (the backend's devices as the peak saw them), ``peak_tflops``
        (``{"float32", "bfloat16"}``: median TFLOP/s of the square matmul, None where not
        measured) and ``matmul_size``.
    """
    peak = peak if isinstance(peak, dict) else {}
    gpu = bool(info.get("accelerators"))
    tflops = {}
    for dtype in ("float32", "bfloat16"):
        gflops = (peak.get(dtype) or {}).get("gflops")
        tflops[dtype] = gflops / 1e3 if gflops else None
    return {
        "kind": "gpu" if gpu else "cpu",
        "name": info["accelerators"][0] if gpu else info.get("cpu"),
        "devices": peak.get("devices"),
        "matmul_size": peak.get("size"),
        "peak_tflops": tflops,
    }


def evaluate_targets(results: dict[str, Any]) -> dict[str, Any]:
    """``{dotted key: {"value", "target", "met"}}`` for every target in :data:`TARGETS`."""
    out = {}
    for key, op, target in TARGETS:
        section, field = key.split(".")
        value = results.get(section, {}).get(field)
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        out[key] = {"value": value, "target": f"{op} {target:g}", "met": met}
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--backbones", nargs="+", help="forward-throughput backbones")
    parser.add_argument(
        "--forward-modes",
        nargs="+",
        choices=MODES,
        help="forward-throughput modes (default all; on --device gpu, mixed_bfloat16)",
    )
    parser.add_argument(
        "--train-backbones",
        nargs="+",
        help="head stage, fine-tune, prefix cache, serving (the first one for single ones)",
    )
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(MEASUREMENTS)}")
    parser.add_argument(
        "--backend",
        default=os.environ.get("KERAS_BACKEND") or ("tensorflow" if has_tensorflow() else "jax"),
        help="Keras backend of the model-side measurements",
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="directory for the results")
    parser.add_argument("--tag", help="file name stem instead of <machine>-<date>")
    parser.add_argument("--timeout", type=float, help="seconds per measurement process")
    parser.add_argument("--render", help="re-render the .md and .png of an existing JSON")
    parser.add_argument("--peer", choices=["timm"], help="measure timm beside zoo (peer extra)")
    parser.add_argument(
        "--device",
        choices=["cpu", "gpu"],
        default="cpu",
        help="gpu: GPU sizes and settings (device_settings; benchmarks/device.sh)",
    )
    parser.add_argument("--budget", type=float, help="skip measurements after this many seconds")
    parser.add_argument(
        "--scale-1m", action="store_true", help="scale: add the 1,000,000-image folder"
    )
    args = parser.parse_args(argv)
    default_only = (
        DEVICE_ONLY.split(",")
        if args.device == "gpu"
        else [m for m in MEASUREMENTS if m not in ON_REQUEST]
    )
    only = args.only.split(",") if args.only else default_only
    unknown = sorted(set(only) - set(MEASUREMENTS))
    if unknown:
        parser.error(f"unknown measurement(s) {unknown}; expected some of {list(MEASUREMENTS)}")
    args.only = only
    args.timeout = args.timeout or (600.0 if args.quick else 3600.0)
    return args


def _choose_backbones(args: argparse.Namespace) -> list[str]:
    """Resolves the backbone lists against the registry; returns the unregistered ones."""
    if getattr(args, "device", "cpu") == "gpu" and not args.quick:
        args.backbones = args.backbones or list(DEVICE_BACKBONES)
        args.train_backbones = args.train_backbones or args.backbones
    if args.quick:
        default_quick, _ = registered(list(QUICK_PREFERENCE))
        args.backbones = args.backbones or default_quick[:1]
        args.train_backbones = args.train_backbones or args.backbones[:1]
    args.backbones, missing = registered(list(args.backbones or FORWARD_BACKBONES))
    args.train_backbones, missing_train = registered(list(args.train_backbones or TRAIN_BACKBONES))
    if not args.train_backbones:
        args.train_backbones = args.backbones[:1]
    return sorted(set(missing + missing_train))


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmarks; returns 0 when every selected measurement ran, else 1."""
    args = parse_args(argv)
    if args.render:
        paths = report.write_all(json.loads(Path(args.render).read_text()), Path(args.render))
        print("\n".join(str(p) for p in paths))
        return 0
    missing = _choose_backbones(args)
    if not args.backbones and not args.train_backbones:
        print("No requested backbone is registered; see `zoo list`.", file=sys.stderr)
        return 2
    info = machine_info(args.backend)
    date = _dt.datetime.now().strftime("%Y%m%d-%H%M")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.tag or f"{machine_slug(info)}-{date}{'-quick' if args.quick else ''}"
    args.log = str(out_dir / f"{stem}.log")
    Path(args.log).write_text("", encoding="utf-8")
    runner = Runner(args)
    start = time.perf_counter()
    results = runner.run()
    info["load_average_end"] = list(os.getloadavg())
    doc = {
        "schema": 1,
        "machine": info,
        "settings": {
            "quick": args.quick,
            "device": args.device,
            "budget_seconds": args.budget,
            "backend": args.backend,
            "backbones": args.backbones,
            "train_backbones": args.train_backbones,
            "not_registered": missing,
            "measurements": runner.config,
            "total_seconds": time.perf_counter() - start,
        },
        **results,
    }
    doc["device"] = device_section(info, doc.get("peak"))
    doc["targets"] = evaluate_targets(doc)
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    for path in [json_path, *report.write_all(doc, json_path)]:
        print(path)
    errors = [k for k in MEASUREMENTS if _has_error(doc.get(k))]
    return 1 if errors else 0


def _has_error(section: Any) -> bool:
    if not isinstance(section, dict):
        return False
    return "error" in section or any(_has_error(v) for v in section.values())


if __name__ == "__main__":
    sys.exit(main())
