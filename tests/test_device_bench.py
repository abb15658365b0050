"""The GPU run's harness (``benchmarks/device.sh`` -> ``benchmarks.run --device gpu``)
without a GPU, JAX or timm: each measurement process is replaced by a stand-in returning
fixed figures, so what is checked is the plan (sizes, order, the same batch for zoo and
timm, the budget) and the results' assembly (ratios, fraction of peak, the device section).
The measurements themselves run in ``bash benchmarks/device.sh --quick`` (needs JAX + timm).
"""

import json
import types

import pytest

from benchmarks import run

GPU_NAME = "NVIDIA H200, 143771 MiB"
BF16_GFLOPS = 790_000.0


def _fake_child(calls):
    def child(name, params, backend, timeout, log):
        calls.append((name, params))
        if name == "peak":
            first = {"first_call_seconds": 1.0}
            gflops = {
                "float32": {"gflops": 50e3, **first},
                "bfloat16": {"gflops": BF16_GFLOPS, **first},
            }
            return {"size": params["size"], "devices": ["cuda:0"], **gflops}
        if name == "forward":
            rate = {"images_per_second": 1000.0, "first_call_seconds": 9.0}
            shape = {"input_size": [224, 224], "batch_size": params["batch_size"]}
            return {**shape, "gmacs": 4.0, "mixed_bfloat16": rate}
        if name == "fine_tune":
            settings = {"mixed_precision": "bfloat16", "jit_compile": True}
            return {"zoo_images_per_second": 400.0, "zoo_settings": settings, "speedup": None}
        if name == "peer":
            return {"forward_images_per_second": 800.0, "train_step_images_per_second": 500.0}
        return {"plain_seconds": 6.0, "zoo_seconds": 2.0, "speedup": 3.0}

    return child


@pytest.fixture
def gpu_run(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(run, "run_child", _fake_child(calls))
    monkeypatch.setattr(run, "machine_info", lambda backend: _machine(backend))

    def go():
        code = run.main(["--device", "gpu", "--peer", "timm", "--out", str(tmp_path)])
        return code, json.loads(next(tmp_path.glob("*.json")).read_text()), calls

    return go


def _machine(backend):
    return {
        "cpu": "x86",
        "cpu_flags": [],
        "cores": 16,
        "memory_gib": 128.0,
        "accelerators": [GPU_NAME],
        "python": "3.12.3",
        "tensorflow": None,
        "keras": "3.15.1",
        "jax": "0.11.2",
        "backend": backend,
        "load_average": [0.0, 0.0, 0.0],
        "date": "2026-01-01T00:00:00+00:00",
    }


def test_gpu_settings_use_one_batch_and_native_sizes_for_zoo_and_timm():
    config = run.device_settings(quick=False)
    assert config["forward"]["batch_size"] == config["fine_tune"]["batch_size"] == 32
    assert config["forward"]["input_size"] is None  # each backbone's native input
    assert config["forward"]["modes"] == ["mixed_bfloat16"] and config["forward"]["device_resident"]
    ft = config["fine_tune"]
    assert (ft["mixed_precision"], ft["jit_compile"], ft["probe"]) == ("bfloat16", True, False)
    assert config["peer"]["amp"] == "bfloat16" and config["peak"]["size"] == 8192
    quick = run.device_settings(quick=True)
    assert quick["forward"]["input_size"] == quick["fine_tune"]["input_size"] < 224
    assert quick["forward"].keys() == config["forward"].keys()  # the same code paths


def test_gpu_run_orders_measurements_and_matches_timm_to_zoo(gpu_run):
    code, doc, calls = gpu_run()
    assert code == 0
    names = [name for name, _ in calls]
    n = len(run.DEVICE_BACKBONES)
    # The peer right after fine_tune (its ratios read both rows), the head stage last.
    assert names == ["peak"] + ["forward"] * n + ["fine_tune"] * n + ["peer"] * n + ["head_stage"]
    peer_params = [p for name, p in calls if name == "peer"]
    assert [p["backbone"] for p in peer_params] == list(run.DEVICE_BACKBONES)
    assert all(p["batch_size"] == p["train_batch_size"] == 32 for p in peer_params)
    assert all(p["amp"] == "bfloat16" and p["input_size"] is None for p in peer_params)

    row = doc["peer"]["resnet50"]
    assert row["zoo_forward_mode"] == "mixed_bfloat16"
    assert row["forward_ratio"] == pytest.approx(1000.0 / 800.0)
    assert row["train_ratio"] == pytest.approx(400.0 / 500.0)
    assert row["forward_fraction_of_peak"] == pytest.approx(2 * 4.0 * 800.0 / BF16_GFLOPS)
    assert doc["device"]["kind"] == "gpu" and doc["device"]["name"] == GPU_NAME
    assert doc["device"]["peak_tflops"]["bfloat16"] == pytest.approx(790.0)
    assert doc["settings"]["device"] == "gpu"
    assert doc["serving"]["skipped"] == "not selected (--only)"


def test_budget_skips_what_is_left_and_still_writes_results(gpu_run, monkeypatch):
    monkeypatch.setattr(run.Runner, "__init__", _with_budget(run.Runner.__init__, 0.0))
    code, doc, calls = gpu_run()
    assert calls == [] and code == 0
    assert doc["peak"]["skipped"].startswith(run.BUDGET_SKIP)
    assert doc["peer"]["resnet50"]["skipped"].startswith(run.BUDGET_SKIP)
    assert doc["peer"]["resnet50"]["forward_ratio"] is None
    assert doc["device"]["peak_tflops"] == {"float32": None, "bfloat16": None}


def test_peer_still_runs_where_zoo_was_measured_before_the_budget_ran_out(gpu_run, monkeypatch):
    clock = iter(range(0, 10_000, 10))  # each reading 10 s after the last
    fake_time = types.SimpleNamespace(perf_counter=lambda: float(next(clock)))
    monkeypatch.setattr(run, "time", fake_time)
    monkeypatch.setattr(run.Runner, "__init__", _with_budget(run.Runner.__init__, 45.0))
    code, doc, calls = gpu_run()
    measured = [(name, p.get("backbone")) for name, p in calls]
    assert measured[:3] == [
        ("peak", None),
        ("forward", "efficientnet_lite0"),
        ("forward", "mobilenet_v2"),
    ]
    assert doc["forward"]["resnet50"]["skipped"].startswith(run.BUDGET_SKIP)
    assert [b for name, b in measured if name == "peer"] == ["efficientnet_lite0", "mobilenet_v2"]
    assert doc["peer"]["inception_v3"]["skipped"].startswith(run.BUDGET_SKIP)


def _with_budget(init, seconds):
    def patched(self, args):
        args.budget = seconds
        init(self, args)

    return patched


def test_device_section_of_a_cpu_run_names_the_cpu():
    info = {**_machine("jax"), "accelerators": []}
    section = run.device_section(info, None)
    assert section["kind"] == "cpu" and section["name"] == "x86"
    assert section["peak_tflops"] == {"float32": None, "bfloat16": None}
