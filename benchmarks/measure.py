"""Runs one measurement in this process and writes its JSON result to a file.

Usage (the orchestrator, :mod:`benchmarks.run`, starts one such process per
measurement, with ``KERAS_BACKEND`` already set)::

    python -m benchmarks.measure NAME --params '{"backbone": "resnet50"}' --result out.json

The result file holds ``{"result": {...}, "meta": {...}}``; on failure ``{"error": ...,
"meta": {...}}``. ``meta`` has the wall time, the backend and the load average before
and after, so a noisy run shows.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# name -> (module, function); each function takes the params as keyword arguments.
MEASUREMENTS: dict[str, tuple[str, str]] = {
    "peak": ("benchmarks.model_bench", "measure_peak"),
    "forward": ("benchmarks.model_bench", "measure_forward"),
    "head_stage": ("benchmarks.train_bench", "measure_head_stage"),
    "fine_tune": ("benchmarks.train_bench", "measure_fine_tune"),
    "prefix_cache": ("benchmarks.train_bench", "measure_prefix_cache"),
    "serving": ("benchmarks.tf_bench", "measure_serving"),
    "pipeline": ("benchmarks.tf_bench", "measure_pipeline"),
    "serving_formats": ("benchmarks.serving_bench", "measure_serving_formats"),
    "peer": ("benchmarks.timm_bench", "measure_timm_peer"),
    "peer_head_stage": ("benchmarks.timm_bench", "measure_timm_head_stage"),
    "distribute": ("benchmarks.distribute_bench", "measure_distribute"),
    "scale": ("benchmarks.scale_bench", "measure_scale"),
}


def run_measurement(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Runs measurement ``name`` with ``params`` here and returns its result dict.

    Raises:
        KeyError: unknown measurement name.
    """
    if name not in MEASUREMENTS:
        raise KeyError(f"Unknown measurement {name!r}; expected one of {sorted(MEASUREMENTS)}.")
    module, function = MEASUREMENTS[name]
    return getattr(importlib.import_module(module), function)(**params)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: runs one measurement, writes ``--result``; exit 0 or 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(MEASUREMENTS))
    parser.add_argument("--params", default="{}", help="JSON object of keyword arguments")
    parser.add_argument("--result", required=True, help="where to write the JSON result")
    args = parser.parse_args(argv)
    meta: dict[str, Any] = {
        "backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "load_before": list(os.getloadavg()),
    }
    start = time.perf_counter()
    try:
        out: dict[str, Any] = {"result": run_measurement(args.name, json.loads(args.params))}
        code = 0
    except Exception as exc:  # noqa: BLE001  (reported to the orchestrator, not raised)
        traceback.print_exc()
        out = {"error": f"{type(exc).__name__}: {exc}"}
        code = 1
    meta["wall_seconds"] = time.perf_counter() - start
    meta["load_after"] = list(os.getloadavg())
    out["meta"] = meta
    with open(args.result, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, default=_jsonable)
    return code


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
