"""Writes zoo/backbones/keras_hub_rows.json: the KerasHub rows' facts, read and measured.

For every row of ``zoo.backbones.keras_hub.ROWS`` it reads the preset's entry from
KerasHub's own preset table (handle, version, description, published parameter count),
builds the architecture zoo's code describes (random weights, offline) at the preset's size
and refuses the row unless its parameter count is the published one (to the precision
published: DINOv3's are rounded; with a 1000-class classifier where the preset counts
one), then builds the row at its default input size and
records its parameters and GMACs (``zoo.cost.count_macs``).

    .venv/bin/python scripts/generate_keras_hub_rows.py            # every row
    .venv/bin/python scripts/generate_keras_hub_rows.py --check    # compare, write nothing

Needs keras-hub (the ``hub`` extra) and about 5 GB of memory for the giant rows.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from pathlib import Path

import keras
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo.backbones import keras_hub as family  # noqa: E402
from zoo.cost import count_macs  # noqa: E402


def published_precision(published: int) -> int:
    """10 ** (trailing zeros) of a published count: 21_600_000 -> 100_000."""
    step = 1
    while published and published % (step * 10) == 0:
        step *= 10
    return step


def matches_published(built: int, published: int) -> bool:
    """Whether ``built`` rounds to ``published`` at the precision ``published`` is given in.

    Exact counts (most presets) must be equal; a count given as 21_600_000 accepts
    21_550_000 .. 21_649_999.
    """
    step = published_precision(published)
    if step <= 10:
        return built == published
    return abs(built - published) * 2 < step or (abs(built - published) * 2 == step)


def published_count(row: family.Row, model: keras.Model) -> int:
    """What the preset would publish for ``model`` as KerasHub counts it (``Row.counted``):
    every variable (of the whole image-text model for CLIP), or with a 1000-class
    classifier on the pooled features, or timm's way (trainable parameters and the
    classifier)."""
    if row.counted in ("all", "image+text"):  # image+text: ``model`` is the whole CLIP
        return model.count_params()
    top = (model.output.shape[-1] + 1) * 1000
    if row.counted == "all+top":
        return model.count_params() + top
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights) + top


def preset_facts(preset: str) -> dict:
    """The preset's entry in KerasHub's preset table (no download)."""
    import keras_hub

    entry = keras_hub.models.Backbone.presets[preset]
    handle = entry["kaggle_handle"]
    return {
        "handle": handle,
        "version": int(handle.rstrip("/").rsplit("/", 1)[1]),
        "description": " ".join(entry["metadata"]["description"].split()),
        "preset_params": int(entry["metadata"]["params"]),
    }


def measure(row: family.Row) -> dict:
    """The row's facts: the preset's, and its parameters and GMACs as built."""
    facts = {"name": row.name, "preset": row.preset, **preset_facts(row.preset)}
    keras.backend.clear_session()
    hub = family.published_model(row)
    built = published_count(row, hub)
    del hub
    gc.collect()
    if not matches_published(built, facts["preset_params"]):
        raise SystemExit(
            f"{row.name}: the architecture has {built:,} parameters at {row.preset_size} px, "
            f"the preset {row.preset} publishes {facts['preset_params']:,}"
        )
    keras.backend.clear_session()
    model = family.build(row)
    facts["params"] = model.count_params()
    facts["gmacs"] = round(count_macs(model) / 1e9, 3)
    if row.timm:  # KerasHub's conversion decides the width and the layers: read them
        facts["feature_dim"] = int(model.output.shape[-1])
        facts["stage_ends"] = family.stage_ends(model)
        if facts["stage_ends"][-1] != model.layers[-1].name or len(facts["stage_ends"]) < 3:
            raise SystemExit(f"{row.name}: no stage ends found: {facts['stage_ends']}")
    facts["sha256"] = None  # no pinned hash: recorded when the preset is first fetched
    del model
    gc.collect()
    return facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the table only")
    parser.add_argument("--only", nargs="*", help="these rows (default all)")
    args = parser.parse_args(argv)
    import keras_hub

    rows = [r for r in family.ROWS if not args.only or r.name in args.only]
    old = family.read_table() if family.TABLE.exists() else {}
    out = dict(old)
    failed = []
    for row in rows:
        try:
            facts = measure(row)
        except SystemExit as refused:
            print(refused, flush=True)
            failed.append(row.name)
            continue
        print(f"{row.name}: {facts['params']:,} params, {facts['gmacs']} GMACs", flush=True)
        if args.check and old.get(row.name) != facts:
            print(f"  differs from the table: {old.get(row.name)}")
        out[row.name] = facts
    if not args.check:
        table = {
            "keras_hub": keras_hub.__version__,
            "rows": [out[r.name] for r in family.ROWS if r.name in out],
        }
        family.TABLE.write_text(json.dumps(table, indent=1) + "\n")
        print(f"wrote {family.TABLE} ({len(table['rows'])} rows)")
    if failed:
        print(f"refused (not written): {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
