"""``zoo lr-find RECIPE [--stage N]``: the learning-rate range test on one of a recipe's stages.

The recipe's data and classifier are built as ``zoo run`` builds them; the stages before
``N`` are trained first (as in a run, without a run directory), then
:func:`zoo.training.lr_find.lr_find` raises stage ``N``'s learning rate exponentially over
a few steps, restores the weights, and suggests the rate where the loss falls fastest.
Writes ``lr_find.png`` (loss against learning rate, the suggestion marked) and
``lr_find.json`` into ``--out``, and prints the ``--set`` option that uses the suggestion.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from recipes.config import load_recipe
from zoo.errors import InvalidValueError
from zoo.files import write_text_atomic

__all__ = ["main_lr_find", "plot_lr_find"]


def plot_lr_find(result: Any, path: str | Path, title: str) -> Path:
    """Loss (raw and smoothed) against the learning rate on a log axis, the suggestion
    marked; ``result`` is a :class:`zoo.training.lr_find.LRFindResult`."""
    from recipes.report.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    ax.plot(result.learning_rates, result.losses, color="C0", alpha=0.3, label="loss per step")
    ax.plot(result.learning_rates, result.smoothed, color="C0", label="smoothed")
    if result.suggestion is not None:
        ax.axvline(result.suggestion, color="C3", linestyle="--")
        ax.annotate(
            f"steepest {result.suggestion:.2g}",
            xy=(result.suggestion, 0.95),
            xycoords=("data", "axes fraction"),
            color="C3",
            fontsize=8,
        )
    finite = [v for v in result.smoothed if math.isfinite(v)]
    lowest = min([v for v in result.losses if math.isfinite(v)] + finite, default=None)
    if finite and lowest is not None:
        ax.set_ylim(lowest * 0.9, min(max(finite), 4 * min(finite)) * 1.1)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def main_lr_find(args: argparse.Namespace) -> int:
    """The ``zoo lr-find`` subcommand's body; returns the exit code.

    Raises:
        InvalidValueError: ``--stage`` is not one of the recipe's stages.
        RecipeError: the recipe is invalid.
    """
    from recipes import runner
    from zoo.training import fine_tune
    from zoo.training.lr_find import lr_find

    recipe = load_recipe(args.recipe, args.set)
    if not 0 <= args.stage < len(recipe.stages):
        raise InvalidValueError(
            f"--stage {args.stage}: the recipe has stages 0..{len(recipe.stages) - 1} "
            f"({', '.join(s.name for s in recipe.stages)})."
        )
    out = Path(args.out or f"runs/{recipe.name}-lr-find")
    out.mkdir(parents=True, exist_ok=True)
    log = runner._Log(out / "lr_find.log", print)
    runner._configure_runtime(recipe, log)
    data, _, _ = runner._load_data(recipe, log)
    model = runner._build_model(recipe, data.class_names)
    stages = runner._stages(recipe, len(data.class_names), data)
    train = runner._batches(recipe, data, "train", True)
    if args.stage:
        validation = runner._batches(recipe, data, "validation", False) if data.validation else None
        log(f"training stages {', '.join(s.name for s in stages[: args.stage])} first")
        fine_tune(
            model,
            train,
            validation,
            stages[: args.stage],
            **recipe.run.fine_tune_kwargs(),
            seed=recipe.run.seed,
            verbose=1,
        )
    stage = stages[args.stage]
    log(
        f"range test on stage {stage.name!r}: {args.steps} steps, {args.start_lr:g} to {args.end_lr:g}"
    )
    result = lr_find(
        model, train, stage, start_lr=args.start_lr, end_lr=args.end_lr, steps=args.steps, verbose=1
    )
    plot = plot_lr_find(result, out / "lr_find.png", f"{recipe.name}, stage {stage.name}")
    write_text_atomic(
        out / "lr_find.json",
        json.dumps({"recipe": recipe.name, "stage": stage.name, **result.to_dict()}, indent=1),
    )
    if result.suggestion is None:
        log(f"no suggestion: the loss did not fall before it diverged; see {plot}")
        return 0
    log(f"suggested learning rate {result.suggestion:.3g} (steepest fall of the loss); plot {plot}")
    log(
        f"use it: zoo run {args.recipe} --set stages.{args.stage}.learning_rate={result.suggestion:.3g}"
    )
    return 0
