"""A ViT-S/14 (DINOv2-small architecture) in zoo and in timm: forward, full fine-tune, LoRA.

Usage::

    python -m benchmarks.vit_bench [--batch 16] [--size 224] [--repeats 5]
                                   [--peer-python .venv-peer/bin/python] [--out DIR]
    python -m benchmarks.run --only vit [--quick]   (the same rows in the full results file)

zoo's side is the registry row ``vit_small_patch14_dinov2`` (random weights) as
``zoo.build_classifier`` builds it (10 classes); timm's is ``vit_small_patch14_dinov2``
(``pretrained=False``, 10 classes), run by the peer environment's Python
(``scripts/setup_peer.sh``) when it imports timm. Both in float32 on the CPU, batch 16 at
224 x 224 by default, random pixels and labels, Adam:

- forward: images/s of the classifier in inference mode (zoo: the model called inside a
  ``tf.function``; timm: ``torch.inference_mode()``);
- train step, full fine-tune: every weight trains (zoo: ``FullFineTune()``, compiled
  ``train_on_batch``, Keras' own train step as ``fit`` runs it);
- train step, LoRA: rank 8, alpha 16 on the attention's query and value projections, the
  head trains, nothing else (zoo: ``zoo.LoRA()``, Keras' ``enable_lora``; timm has no LoRA
  of its own, so the same update is added to its fused ``qkv`` projection: ``x @ A @ B``
  with ``B``'s key columns fixed at zero).

Each of the six measurements runs in its own process, so its peak memory is its own: the
peak resident set size (``ru_maxrss``) at the end, and the resident size just before the
first timed call (the model, its weights and the framework), both in MiB. One warm-up call
(tracing included, reported apart), then the median of ``--repeats`` calls.

Writes ``<out>/<machine>-<date>-vit.json`` and ``.md``. Numbers from a machine other
processes share are noisy; the load average is recorded beside them.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.common import machine_info, machine_slug, median  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "benchmarks" / "results"
BACKBONE = "vit_small_patch14_dinov2"  # zoo's row and timm's model share the name
NUM_CLASSES = 10
RANK, ALPHA = 8, 16.0
MODES = ("forward", "full", "lora")
MODE_WORDS = {
    "forward": "forward",
    "full": "train step, full fine-tune",
    "lora": f"train step, LoRA r={RANK} (query, value)",
}
MARK = "VIT_BENCH_RESULT "


def _rss_mib() -> float:
    """The resident set size now, in MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _timed(fn: Any, repeats: int) -> dict[str, Any]:
    import time

    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return {"first_call_seconds": first, "seconds": seconds, "median_seconds": median(seconds)}


# -- zoo ------------------------------------------------------------------------------------


def measure_zoo(mode: str, batch: int, size: int, repeats: int) -> dict[str, Any]:
    """One zoo measurement (see the module doc); runs in its own process."""
    import keras
    import numpy as np
    import tensorflow as tf

    import zoo

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, batch)
    model = zoo.build_classifier(BACKBONE, NUM_CLASSES, weights=None, input_shape=(size, size, 3))
    if mode == "forward":
        call = tf.function(lambda images: model(images, training=False))

        def step() -> None:
            call(x).numpy()

    else:
        policy = zoo.FullFineTune() if mode == "full" else zoo.LoRA(rank=RANK, alpha=ALPHA)
        policy.apply(model)
        optimizer = zoo.make_optimizer("adam", 1e-4, model, policy)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer=optimizer, loss=loss, jit_compile=False)

        def step() -> None:
            model.train_on_batch(x, y)

    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    total = sum(int(np.prod(v.shape)) for v in model.weights)
    before = _rss_mib()
    timing = _timed(step, repeats)
    return {
        "framework": "zoo",
        "mode": mode,
        "images_per_second": batch / timing["median_seconds"],
        **timing,
        "rss_before_mib": before,
        "peak_rss_mib": _peak_mib(),
        "trainable_params": trainable if mode != "forward" else 0,
        "total_params": total,
        "precision": "float32",
    }


# -- timm -----------------------------------------------------------------------------------


def _lora_qkv(qkv: Any, rank: int, alpha: float) -> Any:
    """timm's fused ``qkv`` Linear plus ``(alpha / rank) * x @ A @ B`` on the q and v parts."""
    import torch

    class LoRAQKV(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base = qkv
            dim = qkv.in_features
            self.a = torch.nn.Parameter(torch.randn(dim, rank) / dim**0.5)
            self.b_q = torch.nn.Parameter(torch.zeros(rank, dim))
            self.b_v = torch.nn.Parameter(torch.zeros(rank, dim))
            self.register_buffer("zeros", torch.zeros(rank, dim), persistent=False)
            self.scale = alpha / rank

        def forward(self, x: Any) -> Any:
            b = torch.cat([self.b_q, self.zeros, self.b_v], dim=1)
            return self.base(x) + self.scale * ((x @ self.a) @ b)

    return LoRAQKV()


def measure_timm(mode: str, batch: int, size: int, repeats: int) -> dict[str, Any]:
    """One timm measurement (see the module doc); runs in its own process."""
    import numpy as np
    import timm
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(0, 255, (batch, 3, size, size)).astype("float32") / 255)
    y = torch.from_numpy(rng.integers(0, NUM_CLASSES, batch))
    model = timm.create_model(BACKBONE, pretrained=False, num_classes=NUM_CLASSES, img_size=size)
    if mode == "forward":
        model.eval()

        def step() -> None:
            with torch.inference_mode():
                model(x)

        trainable: list[Any] = []
    else:
        model.train()
        if mode == "lora":
            for p in model.parameters():
                p.requires_grad_(False)
            for block in model.blocks:
                block.attn.qkv = _lora_qkv(block.attn.qkv, RANK, ALPHA)
            for p in model.get_classifier().parameters():
                p.requires_grad_(True)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(trainable, lr=1e-4)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()

    before = _rss_mib()
    timing = _timed(step, repeats)
    return {
        "framework": "timm",
        "mode": mode,
        "images_per_second": batch / timing["median_seconds"],
        **timing,
        "rss_before_mib": before,
        "peak_rss_mib": _peak_mib(),
        "trainable_params": sum(p.numel() for p in trainable),
        "total_params": sum(p.numel() for p in model.parameters())
        + sum(b.numel() for b in model.buffers()),
        "precision": "float32",
        "versions": {"timm": timm.__version__, "torch": torch.__version__},
    }


# -- the run ----------------------------------------------------------------------------------


def _subprocess(
    python: str, framework: str, mode: str, batch: int, size: int, repeats: int
) -> dict[str, Any]:
    command = [python, "-m", "benchmarks.vit_bench", "--measure", f"{framework}:{mode}"]
    command += ["--batch", str(batch), "--size", str(size), "--repeats", str(repeats)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return {"framework": framework, "mode": mode, "skipped": f"failed: {' | '.join(tail)}"}


def _peer_problem(python: str) -> str | None:
    if not Path(python).exists():
        return f"no peer Python at {python} (scripts/setup_peer.sh)"
    done = subprocess.run(
        [python, "-c", "import timm, torch"], capture_output=True, text=True, check=False
    )
    return None if done.returncode == 0 else f"timm does not import in {python}"


def run_all(
    batch: int = 16, size: int = 224, repeats: int = 5, peer_python: str | None = None
) -> dict[str, Any]:
    """The six measurements (zoo, then timm where it imports), each in its own process.

    Returns:
        ``{"backbone", "batch", "size", "repeats", "lora", "peer_skipped", "rows"}``; each
        row as :func:`measure_zoo` / :func:`measure_timm` return it, or ``{"framework",
        "mode", "skipped"}``.
    """
    peer_python = peer_python or str(REPO / ".venv-peer" / "bin" / "python")
    peer = _peer_problem(peer_python)
    rows = []
    for mode in MODES:
        rows.append(_subprocess(sys.executable, "zoo", mode, batch, size, repeats))
        if peer is None:
            rows.append(_subprocess(peer_python, "timm", mode, batch, size, repeats))
    return {
        "backbone": BACKBONE,
        "batch": batch,
        "size": size,
        "repeats": repeats,
        "lora": {"rank": RANK, "alpha": ALPHA, "targets": ["query", "value"]},
        "peer_skipped": peer,
        "rows": rows,
    }


def section_md(result: dict[str, Any]) -> str:
    """The rows as a Markdown section: zoo beside timm per mode, their ratio, peak RSS."""
    rows = {(r["framework"], r["mode"]): r for r in result["rows"]}
    lines = [
        f"## ViT-S/14 (DINOv2-small architecture) in zoo and timm, {result['batch']} images of "
        f"{result['size']} x {result['size']}",
        "",
        "Float32, random weights, Adam; median of "
        f"{result['repeats']} calls after one warm-up; peak RSS of each measurement's process. "
        f"LoRA: rank {RANK}, alpha {ALPHA:g} on query and value, the head trains.",
        "",
    ]
    if result.get("peer_skipped"):
        lines += [f"timm: {result['peer_skipped']}", ""]
    header = "| measurement | zoo img/s | timm img/s | zoo / timm | zoo trainable params |"
    header += " zoo peak RSS MiB | timm peak RSS MiB |"
    lines += [header, "|---|---|---|---|---|---|---|"]
    for mode in MODES:
        z, t = rows.get(("zoo", mode), {}), rows.get(("timm", mode), {})
        zr, tr = z.get("images_per_second"), t.get("images_per_second")
        ratio = f"{zr / tr:.2f}" if zr and tr else "-"
        share = (
            f"{z['trainable_params']:,} ({100 * z['trainable_params'] / z['total_params']:.2f}%)"
            if mode != "forward" and z.get("total_params")
            else "-"
        )
        lines.append(
            f"| {MODE_WORDS[mode]} | {_num(zr)} | {_num(tr)} | {ratio} | {share} | "
            f"{_num(z.get('peak_rss_mib'), 0)} | {_num(t.get('peak_rss_mib'), 0)} |"
        )
    skipped = [
        f"- {r['framework']} {r['mode']}: {r['skipped']}" for r in result["rows"] if "skipped" in r
    ]
    return "\n".join([*lines, *([""] + skipped if skipped else [])])


def render(result: dict[str, Any]) -> str:
    """A results file of its own: the machine, then :func:`section_md`."""
    machine = result["machine"]
    load = ", ".join(f"{v:.2f}" for v in machine["load_average"])
    head = [
        f"# {BACKBONE} in zoo and timm",
        "",
        f"{machine['cpu']} ({machine['isa']}), {machine['cores']} cores, TensorFlow "
        f"{machine['tensorflow']}, Keras {machine['keras']}; load average at the start {load} "
        "(other processes shared the cores when it is above the core count: noisy figures).",
        "",
    ]
    return "\n".join(head) + "\n" + section_md(result) + "\n"


def _num(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peer-python", default=str(REPO / ".venv-peer" / "bin" / "python"))
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # framework:mode, in a child
    args = parser.parse_args(argv)
    if args.measure:
        framework, mode = args.measure.split(":")
        fn = measure_zoo if framework == "zoo" else measure_timm
        print(MARK + json.dumps(fn(mode, args.batch, args.size, args.repeats)), flush=True)
        return 0

    info = machine_info("tensorflow")
    result = {"machine": info, **run_all(args.batch, args.size, args.repeats, args.peer_python)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M")
    stem = out / f"{machine_slug(info)}-{date}-vit"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(render(result))
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
