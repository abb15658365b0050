"""The serving-formats measurement's code path on a tiny backbone (speed is not checked),
the ratio and target arithmetic, and its Markdown table."""

import pytest

from benchmarks import report, serving_bench, timm_bench
from zoo.testing import temporary_backbone


@pytest.fixture(scope="module")
def measured():
    with temporary_backbone() as spec:
        return serving_bench.measure_serving_formats(
            spec.name, batch_sizes=(1, 4), repeats=1, images_per_call=4, calibration_images=4
        )


def test_every_format_runs_the_same_model_at_each_batch_size(measured):
    assert measured["input_size"] == [32, 32] and measured["threads"] >= 1
    for batch in ("batch_1", "batch_4"):
        rates = measured[batch]["images_per_second"]
        assert set(rates) == {*serving_bench.ZOO_FORMATS, "timm"}
        assert all(rates[f] > 0 for f in serving_bench.ZOO_FORMATS)
        assert measured[batch]["fastest"] in serving_bench.ZOO_FORMATS
    # The runners really run the exported/converted classifier: float files match Keras.
    assert measured["logit_scale"] > 1e-6
    diffs = measured["output_diff"]
    assert max(diffs["saved_model"], diffs["tflite"], diffs["onnx"]) < 1e-4
    assert diffs["tflite-fp16"] < 1e-2 and diffs["tflite-int8"] < 0.5


def test_timm_is_skipped_with_the_reason_not_an_error(measured):
    # The tiny test backbone has no timm counterpart; without timm installed the reason
    # names the peer extra.
    reason = measured["batch_1"]["images_per_second"]["timm"]
    assert isinstance(reason, str) and reason.startswith("skipped: ")
    if not timm_bench.has_timm():
        assert reason == timm_bench.SKIP_NEEDS_PEER
    assert measured["batch_1"]["targets"]["fastest_vs_timm"]["met"] is None


def test_summarize_ratios_fastest_and_targets():
    rates = {"saved_model": 10.0, "tflite": 12.0, "tflite-int8": 16.0, "timm": 20.0}
    out = serving_bench.summarize(rates)
    assert out["fastest"] == "tflite-int8" and out["fastest_images_per_second"] == 16.0
    assert out["ratio_to_saved_model"]["tflite"] == pytest.approx(1.2)
    assert out["ratio_to_timm"]["tflite-int8"] == pytest.approx(0.8)
    assert out["targets"]["fastest_vs_saved_model"] == {
        "value": pytest.approx(1.6),
        "target": ">= 1.5",
        "met": True,
    }
    assert out["targets"]["fastest_vs_timm"]["met"] is False
    skipped = serving_bench.summarize({"saved_model": 10.0, "onnx": 9.0}, "skipped: why")
    assert skipped["fastest"] == "saved_model"
    assert skipped["images_per_second"]["timm"] == "skipped: why"
    assert skipped["ratio_to_timm"]["onnx"] is None
    assert skipped["targets"]["fastest_vs_saved_model"]["met"] is False


def test_markdown_table_has_a_row_per_backbone_and_batch(measured):
    section = {"zoo_test_tiny": measured}
    text = report.serving_formats_md(section)
    assert "| zoo_test_tiny | 1 |" in text and "| zoo_test_tiny | 4 |" in text
    assert "tflite-int8" in text
    assert report.serving_formats_md({"skipped": "not selected (--only)"}).endswith(
        "not selected (--only)"
    )


def test_peer_ratios_pair_each_backbone_with_zoo_where_both_ran():
    runs = {
        "a": {"forward_images_per_second": 20.0, "train_step_images_per_second": 5.0},
        "b": {"skipped": timm_bench.SKIP_NEEDS_PEER, "forward_images_per_second": None},
    }
    forward = {"a": {"float32": {"images_per_second": 30.0}}, "b": {"float32": {}}}
    fine_tune = {"a": {"zoo_images_per_second": 4.0, "zoo_settings": {"mixed_precision": None}}}
    out = timm_bench.peer_ratios(runs, forward, fine_tune)
    assert out["a"]["forward_ratio"] == pytest.approx(1.5)
    assert out["a"]["train_ratio"] == pytest.approx(0.8)
    assert out["b"]["forward_ratio"] is None and out["b"]["train_ratio"] is None
    text = report.peer_md(out)
    assert "| a | 30.0 | 20.0 | 1.50x | 4.0 | 5.0 | 0.80x |" in text
    assert f"| b | {timm_bench.SKIP_NEEDS_PEER} |" in text


def test_timm_peer_measurement_skips_without_timm():
    if timm_bench.has_timm():
        pytest.skip("timm is installed here (.venv-peer): the skip path does not apply")
    out = timm_bench.measure_timm_peer("mobilenet_v2", batch_size=1, input_size=32)
    assert out == {
        "skipped": timm_bench.SKIP_NEEDS_PEER,
        "forward_images_per_second": None,
        "train_step_images_per_second": None,
    }


def test_timm_head_stage_is_skipped_without_timm_and_rendered_with_it():
    from benchmarks import timm_bench
    from benchmarks.report import peer_head_stage_md

    if not timm_bench.has_timm():
        got = timm_bench.measure_timm_head_stage("efficientnet_lite0", images=4, epochs=1)
        assert got == {"skipped": timm_bench.SKIP_NEEDS_PEER, "seconds": None}
    row = {"backbone": "efficientnet_lite0", "input_size": [96, 96], "images": 64, "epochs": 2}
    assert peer_head_stage_md({**row, "seconds": 12.0, "zoo_seconds": 3.0, "ratio": 4.0}).endswith(
        "| efficientnet_lite0, 96 | 64 x 2 | 3.0 s | 12.0 s | 4.00x |"
    )
    assert peer_head_stage_md({"skipped": "no --peer", "ratio": None}) == ""
