"""The Markdown of ``benchmarks.distribute_bench`` (the measurement itself runs with
``python -m benchmarks.run --quick --only distribute``, not in the tests)."""

from benchmarks.distribute_bench import markdown_section

RESULT = {
    "backbone": "efficientnet_lite0",
    "input_size": [96, 96],
    "global_batch": 8,
    "per_replica_batch": 4,
    "replicas": 2,
    "devices": ["/job:localhost/replica:0/task:0/device:CPU:0", "/device:CPU:1"],
    "none_images_per_second": 20.0,
    "mirrored_images_per_second": 8.0,
    "ratio": 0.4,
    "efficiency": 0.2,
}


def test_section_shows_both_rates_the_ratio_and_the_batches():
    text = markdown_section({"distribute": RESULT})
    row = next(line for line in text.splitlines() if line.startswith("| efficientnet_lite0"))
    assert row == "| efficientnet_lite0, 96 | 8 / 4 | 20.0 img/s | 8.0 img/s | 0.40x | 0.20 |"
    assert "mirrored x2" in text and "overhead, not a speed-up" in text


def test_section_is_empty_when_the_measurement_did_not_run():
    assert markdown_section({"distribute": {"skipped": "not selected (--only)"}}) == ""
    assert markdown_section({}) == ""
