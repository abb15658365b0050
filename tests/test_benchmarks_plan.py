"""The CPU run's plan and its results' assembly, with every measurement process replaced by
a stand-in (no model runs): the training rows beside timm, the scale rows, the ISA line."""

import json

import pytest

from benchmarks import common, report, run, scale_bench


def _fake_child(calls):
    def child(name, params, backend, timeout, log):
        calls.append((name, params))
        if name == "forward":
            return {
                "input_size": [224, 224],
                "batch_size": 16,
                "gmacs": 1.0,
                "float32": {"images_per_second": 100.0, "first_call_seconds": 1.0},
            }
        if name == "fine_tune":
            plain = params.get("plain", True)
            return {
                "zoo_images_per_second": 50.0,
                "zoo_settings": {"mixed_precision": None},
                "plain_images_per_second": 40.0 if plain else None,
                "speedup": 1.25 if plain else None,
            }
        if name == "peer":
            return {"forward_images_per_second": 80.0, "train_step_images_per_second": 40.0}
        if name == "scale":
            return _scale_row(params["images"])
        raise AssertionError(name)

    return child


def _scale_row(images):
    per_image = 1e-3 * (1.1 if images > 300 else 1.0)
    return {
        "images": images,
        "train_images": images * 8 // 10,
        "validation_images": images // 10,
        "test_images": images // 10,
        "scan_split_seconds": 0.5,
        "cache": {"bytes": 2**20, "where": ["memory"], "images_per_second": 300.0},
        "stages": {"head": {"images_per_second": 900.0}, "fine-tune": {"images_per_second": 400.0}},
        "timings": {"evaluate": 1.0},
        "wall_seconds": per_image * images,
        "seconds_per_image": per_image,
        "variable_seconds_per_image": per_image,
        "rss": {"peak_bytes": 3 * 2**30, "peak_by_step_bytes": {"fine-tuning": 3 * 2**30}},
        "cache_budget_bytes": 2 * 2**30,
    }


@pytest.fixture
def cpu_run(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(run, "run_child", _fake_child(calls))

    def go(*argv):
        assert run.main([*argv, "--out", str(tmp_path), "--tag", "t"]) == 0
        doc = json.loads((tmp_path / "t.json").read_text())
        return doc, calls, (tmp_path / "t.md").read_text()

    return go


def test_peer_run_measures_a_training_row_for_every_forward_backbone(cpu_run):
    doc, calls, md = cpu_run("--only", "forward,fine_tune", "--peer", "timm")
    fine_tune = [p for name, p in calls if name == "fine_tune"]
    assert [p["backbone"] for p in fine_tune] == [
        *run.TRAIN_BACKBONES,
        "resnet50",
        "mobilenet_v2",
        "efficientnet_b0",
    ]
    # The plain-Keras anchor only for the train backbones; the others are zoo alone.
    assert [p.get("plain", True) for p in fine_tune] == [True, True, False, False, False]
    for backbone in run.FORWARD_BACKBONES:
        assert doc["peer"][backbone]["train_ratio"] == pytest.approx(50.0 / 40.0)
    assert doc["machine"]["isa"] in {"amx", "avx512f", "avx2", "unknown"}
    assert f"- CPU ISA: {doc['machine']['isa']}" in md
    assert not any(name == "scale" for name, _ in calls)  # only when named


def test_scale_rows_and_summary(cpu_run):
    doc, calls, md = cpu_run("--only", "scale", "--quick", "--scale-1m")
    assert [p["images"] for _, p in calls] == [200, 400, scale_bench.LARGE_SIZE]
    summary = doc["scale"]["summary"]
    assert summary["spread"] == pytest.approx(1.1) and summary["flat"] is True
    assert summary["largest"] == scale_bench.LARGE_SIZE
    # The line through the two largest sizes: 1.1 ms per image, nothing fixed.
    assert summary["marginal_seconds_per_image"] == pytest.approx(1.1e-3)
    assert summary["fixed_seconds"] == pytest.approx(0.0, abs=1e-9)
    assert summary["rss_over_budget_bytes"] == 2**30 and summary["rss_bounded"] is True
    assert "| 1,000,000 |" in md and "within 20%" in md


@pytest.mark.parametrize(
    ("flags", "isa"),
    [
        (["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma"], "amx"),
        (["avx2", "avx512f", "avx512_bf16", "fma"], "avx512f"),
        (["avx2", "fma"], "avx2"),
        ([], "unknown"),
    ],
)
def test_cpu_isa(flags, isa):
    assert common.cpu_isa(flags) == isa
    # Files written before the ISA was recorded get it from their flags when re-rendered.
    assert report._isa({"cpu_flags": flags}) == isa


def test_synthetic_folder_is_written_once(tmp_path):
    folder = scale_bench.synthetic_folder(20, tmp_path, pixels=8)
    files = sorted(folder.rglob("*.png"))
    assert len(files) == 20 and len({f.parent.name for f in files}) == scale_bench.NUM_CLASSES
    stamp = files[0].stat().st_mtime_ns
    assert scale_bench.synthetic_folder(20, tmp_path, pixels=8) == folder
    assert files[0].stat().st_mtime_ns == stamp
