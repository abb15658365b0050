"""A LoRA run end to end: ``zoo run`` of a folder recipe with ``policy = "lora"`` exports a
merged SavedModel, ``zoo verify --source-manifest`` proves every base weight bitwise, and a
tampered adapter, base kernel or merged kernel is named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from recipes import cli
from recipes.export_format import LORA_FILE
from recipes.verify import verify_export
from tests.recipes.export_testlib import colour_squares
from tests.recipes.test_tamper import _read, _rewrite, _values
from tests.zoo.test_lora import NAME, vit_spec
from zoo.testing import temporary_backbone

RANK, ALPHA = 2, 4


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """``zoo run`` of a LoRA recipe on the tiny ViT (random weights, 32 px, 8 images per
    class): the run directory."""
    root = tmp_path_factory.mktemp("lora")
    photos = colour_squares(root / "photos", per_class=8, size=32)
    recipe = {
        "data": {
            "source": f"folder:{photos.as_posix()}",
            "validation_fraction": 0.25,
            "test_fraction": 0.25,
            "seed": 0,
            "image_size": [32, 32],
            "batch_size": 8,
        },
        "model": {"backbone": NAME, "weights": "none"},
        "stages": [
            {
                "name": "lora",
                "policy": "lora",
                "rank": RANK,
                "alpha": ALPHA,
                "epochs": 1,
                "learning_rate": 0.05,
            }
        ],
        "run": {"seed": 0},
    }
    path = root / "lora.toml"
    path.write_text(tomli_w.dumps(recipe))
    with temporary_backbone(vit_spec()):
        assert cli.main(["run", str(path), "--out", str(root / "run")]) == 0
        yield root / "run"


def test_lora_run_exports_merged_and_proves_every_base_weight(run, capsys):
    export = run / "export"
    manifest = _read(export, "zoo_manifest.json")
    paths = [e["path"] for e in manifest["manifest"]["variables"]]
    assert not any("lora_kernel" in p for p in paths)  # merged: no adapter variables
    lora = manifest["lora"]
    assert (lora["rank"], lora["alpha"], lora["scale"]) == (RANK, ALPHA, ALPHA / RANK)
    assert len(lora["layers"]) == 6  # query and value of 3 transformer layers
    with np.load(export / LORA_FILE) as arrays:
        assert len(arrays.files) == 3 * 6

    code = cli.main(["verify", str(export), "--source-manifest", str(run / "source_manifest.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    backbone = [p for p in paths if p.startswith("backbone/")]
    # Every base weight of the backbone, the merged kernels' bases included, bitwise.
    assert f"proven: {len(backbone)} of {len(backbone)} backbone variables" in out
    assert "bitwise equal to --source-manifest" in out
    assert "trained: LoRA adapters, head" in out
    assert "ok   lora: 6 merged kernels = base + 2 * A @ B (rank 2, alpha 4)" in out
    stage = json.loads((run / "report.json").read_text())["stages"][0]
    assert 0 < stage["trainable_params"] < 0.2 * stage["total_params"]
    assert (
        f"{stage['trainable_params']:,} of {stage['total_params']:,}"
        in (run / "report.md").read_text()
    )


def _tamper_npz(export: Path, key: str) -> None:
    path = export / LORA_FILE
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays[key] = arrays[key] + np.float32(0.01)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_tampered_adapter_base_and_merged_kernel_are_named(run, tmp_path):
    """One export, three layers changed: an adapter, a base kernel (both in
    lora_adapters.npz), and a merged kernel rewritten in the SavedModel, model.keras and
    the manifest's hashes together."""
    export = Path(shutil.copytree(run / "export", tmp_path / "export"))
    adapter, base, merged = sorted(_read(export, "zoo_manifest.json")["lora"]["layers"])[:3]
    adapter_key = adapter.removesuffix("/kernel") + "/lora_kernel_a"
    _tamper_npz(export, adapter_key)
    _tamper_npz(export, base.removesuffix("/kernel") + "/base")
    _rewrite(export, {merged: _values(export)[merged] * np.float32(1.01)})

    result = verify_export(export, source_manifest=run / "source_manifest.json")
    assert not result.passed and result.frozen_proven is False
    failures = result.failures
    assert any(f.startswith(f"LoRA adapter {adapter_key}: sha256") for f in failures)
    assert any(
        f.startswith(f"merged kernel {adapter}: the exported kernel is not") for f in failures
    )
    assert any(
        f.startswith(f"frozen variable {base} changed since the pretrained source")
        and f.endswith(f"(the LoRA base kernel in {LORA_FILE})")
        for f in failures
    )
    assert [f for f in failures if merged in f] == [
        f for f in failures if f.startswith(f"merged kernel {merged}: the exported kernel is not")
    ]
