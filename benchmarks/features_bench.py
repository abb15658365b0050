"""How many images per class, and how fast ``zoo embed`` is against the head stage's cache.

``python -m benchmarks.features_bench [--points 5 10 ... 1000] [--image-size 80]`` runs, on
Fashion-MNIST with efficientnet_lite0's ImageNet weights:

1. ``zoo curve``'s measurement (:func:`recipes.curve.run_curve`): validation top-1 of
   cosine kNN, the linear probe and zoo's head stage at each number of training images per
   class, each point with its seconds, all from one embedding pass;
2. ``zoo embed``'s forward pass (:func:`zoo.embed`) against the head stage's own cache
   build (``zoo.caching.compute_activations`` of the classifier's prefix at the backbone's
   output, as ``fine_tune`` runs it for a ``freeze_backbone`` stage) on the same images, one
   after the other in this process, each timed twice (the first pass includes tracing).

Results go to ``benchmarks/results/features-<machine>-<stamp>/``: ``curve.*`` from
:func:`recipes.curve.write_curve`, ``features.json`` (machine, load averages, timings) and
``features.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import machine_info, machine_slug

BACKBONE = "efficientnet_lite0"
SOURCE = "fashion_mnist"


def _cache_build(images: Any, size: tuple[int, int], batch: int) -> dict[str, float]:
    """The head stage's cache build over ``images``' train and validation splits."""
    from zoo import FreezeBackbone, build_classifier
    from zoo.caching import compute_activations, frozen_layers_in_inference, plan_cut, split_model

    model = build_classifier(BACKBONE, 10, weights="imagenet", input_shape=(*size, 3))
    FreezeBackbone().apply(model)
    # As fine_tune plans a stage: its frozen stochastic layers (drop connect) switched off.
    with frozen_layers_in_inference(model):
        plan = plan_cut(model)
    prefix = split_model(model, plan).prefix
    runs = []
    for _ in range(2):
        start, n = time.perf_counter(), 0
        for split in ("train", "validation"):
            acts = compute_activations(
                prefix, images.pipeline(split, size, batch), budget_bytes=sys.maxsize, verbose=0
            )
            n += len(acts.x)
        runs.append({"images": n, "seconds": round(time.perf_counter() - start, 3)})
    return {"runs": runs, "cut": plan.layer}


def _recipe_points(points: list[int], out: Path) -> list[dict[str, Any]]:
    """The catalog recipe (head stage, then the top blocks fine-tuned) at each size.

    ``fashion-mnist-lite0`` as shipped, but with ``train_size`` = 10 x images per class (a
    stratified subset), evaluated on its validation split (the curve's: same fraction and
    seed) and without the export, so each point is its training and evaluation only.
    """
    from recipes.runner import run_recipe

    rows = []
    for per_class in points:
        overrides = [
            f"data.train_size={10 * per_class}",
            'data.evaluate_on="validation"',
            "export.enabled=false",
        ]
        result = run_recipe(
            "fashion-mnist-lite0", out / f"recipe-{per_class}", overrides=overrides, echo=None
        )
        report = result.report
        rows.append(
            {
                "per_class": per_class,
                "train_images": 10 * per_class,
                "validation_top1": report.score,
                "seconds": round(report.wall_seconds, 1),
                "overrides": overrides,
            }
        )
        print(f"recipe at {per_class} per class: {report.score:.4f} in {report.wall_seconds:.0f} s")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--points", nargs="+", type=int, default=[5, 10, 25, 50, 100, 250, 500, 1000]
    )
    parser.add_argument("--image-size", type=int, default=80, help="the catalog recipe's size")
    parser.add_argument("--validation-fraction", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument(
        "--curve-from", help="a results folder whose curve.json to keep (measures the rest)"
    )
    parser.add_argument(
        "--recipe-points",
        nargs="*",
        type=int,
        default=[],
        help="also run the catalog recipe at these images per class (into --curve-from)",
    )
    args = parser.parse_args(argv)

    if args.recipe_points:  # only the recipe's points, added to an earlier results folder
        if not args.curve_from:
            parser.error("--recipe-points needs --curve-from RESULTS_DIR")
        out = Path(args.curve_from)
        load_before = list(os.getloadavg())
        rows = _recipe_points(args.recipe_points, Path("/tmp") / f"zoo-features-{out.name}")
        result = json.loads((out / "features.json").read_text())
        result["recipe"] = {
            "rows": rows,
            "load_averages": [load_before, list(os.getloadavg())],
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        (out / "features.json").write_text(json.dumps(result, indent=1) + "\n")
        lines = [
            "",
            "## The catalog recipe at the same sizes",
            "",
            "`fashion-mnist-lite0` (head stage, then the top two blocks fine-tuned) with "
            "`train_size` = 10 x images per class, evaluated on the same validation images, "
            "no export; measured at "
            f"{result['recipe']['date']} on the same machine (load average "
            f"{load_before[0]:.1f} at the start). The recipe keeps each stage's best epoch by "
            "validation loss, so its validation figure saw one decision the columns above "
            "did not.",
            "",
            "| images per class | train images | validation top-1 | seconds (whole run) |",
            "|---|---|---|---|",
            *(
                f"| {r['per_class']} | {r['train_images']} | {r['validation_top1']:.3f} | "
                f"{r['seconds']:.0f} |"
                for r in rows
            ),
            "",
        ]
        with open(out / "features.md", "a", encoding="utf-8") as f:
            f.write("\n".join(lines))
        print("\n".join(lines))
        return 0

    import keras

    from recipes.curve import run_curve, write_curve
    from zoo import data as zoo_data
    from zoo.embeddings import embed

    info = machine_info(keras.backend.backend())
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M")
    size = (args.image_size, args.image_size)
    options = {"validation_fraction": args.validation_fraction}
    loads = [list(os.getloadavg())]

    if args.curve_from:
        out = Path(args.curve_from)
        curve_dict = json.loads((out / "curve.json").read_text())
        curve_md = (out / "curve.md").read_text()
    else:
        out = Path(args.out) / f"features-{machine_slug(info)}-{stamp}"
        curve = run_curve(
            SOURCE, BACKBONE, "imagenet", points=args.points, image_size=size,
            batch_size=args.batch_size, echo=print, **options,
        )  # fmt: skip
        loads.append(list(os.getloadavg()))
        curve_dict, curve_md = curve.to_dict(), write_curve(curve, out)["markdown"].read_text()

    # The same images (the curve's training subset and the validation split), embedded
    # again and run through the head stage's cache build.
    images = zoo_data.load(SOURCE, per_class=max(args.points), seed=0, **options)
    embed_runs = []
    for _ in range(2):
        e = embed(
            SOURCE, BACKBONE, "imagenet", image_size=size, batch_size=args.batch_size,
            splits=("train", "validation"), per_class=max(args.points), seed=0, **options,
        )  # fmt: skip
        embed_runs.append({"images": len(e.vectors), "seconds": round(e.seconds, 3)})
    loads.append(list(os.getloadavg()))
    cache = _cache_build(images, size, args.batch_size)
    loads.append(list(os.getloadavg()))

    def rate(run: dict[str, float]) -> float:
        return round(run["images"] / run["seconds"], 1)

    result = {
        "machine": info,
        "shared": "the machine ran other jobs at the same time (load averages below)",
        "load_averages": loads,
        "backbone": BACKBONE,
        "source": SOURCE,
        "image_size": list(size),
        "batch_size": args.batch_size,
        "curve": curve_dict,
        "embed": {"runs": embed_runs, "images_per_second": [rate(r) for r in embed_runs]},
        "head_stage_cache_build": {
            **cache,
            "images_per_second": [rate(r) for r in cache["runs"]],
        },
    }
    (out / "features.json").write_text(json.dumps(result, indent=1) + "\n")
    flags = ", ".join(info["cpu_flags"])
    lines = [
        f"# Images per class, and zoo embed against the head stage's cache build ({stamp} UTC)",
        "",
        f"Machine: {info['cpu']} ({flags}; ISA {info['isa']}), {info['cores']} cores, "
        f"TensorFlow {info['tensorflow']}, Keras {info['keras']}; shared with other jobs "
        f"(load average {loads[0][0]:.1f} at the start, {loads[-1][0]:.1f} at the end).",
        f"Data: Fashion-MNIST at {size[0]}x{size[1]}, {BACKBONE} ImageNet weights, batch "
        f"{args.batch_size}.",
        "",
        "## Validation top-1 against training images per class",
        "",
        *curve_md.splitlines()[2:],
        "## zoo embed against the head stage's cache build (same images)",
        "",
        *(
            [f"Measured at {stamp} UTC, after the curve above, on the same machine.", ""]
            if args.curve_from
            else []
        ),
        "| pass | images | zoo embed s | zoo embed images/s | cache build s | cache build images/s |",
        "|---|---|---|---|---|---|",
    ]
    for i, (e, c) in enumerate(zip(embed_runs, cache["runs"], strict=True)):
        lines.append(
            f"| {i + 1} | {e['images']} | {e['seconds']:.1f} | {rate(e)} | {c['seconds']:.1f} | "
            f"{rate(c)} |"
        )
    lines += ["", f"The cache build stores the map at `{cache['cut']}`; zoo embed pools it.", ""]
    (out / "features.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
