"""Shared output helpers of the job layer: text tables and JSON-able values.

One home for what the report, the ``zoo`` command and the runner each used to do their
own way: :func:`markdown_table` (``report.md``), :func:`plain_table` (terminal output of
``zoo list`` / ``zoo datasets``), and :func:`jsonable` (dataclasses, NumPy values, sets
and paths turned into what :func:`json.dumps` accepts).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import numpy as np

__all__ = ["format_cell", "jsonable", "markdown_table", "plain_table", "print_table"]


def format_cell(value: Any, digits: int = 3) -> str:
    """A table cell: ``None`` and NaN as ``-``, floats with ``digits`` decimals."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A GitHub-flavoured Markdown table, one string per line.

    Args:
        header: column titles.
        rows: one sequence of cells per row; cells go through :func:`format_cell`.
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(format_cell(c) for c in row) + " |" for row in rows]
    return lines


def plain_table(rows: Sequence[Sequence[Any]]) -> list[str]:
    """Left-aligned columns separated by two spaces, for a terminal; one string per line.

    Args:
        rows: the header row first, then the data rows, all of the same length; cells go
            through :func:`format_cell`.
    """
    cells = [[format_cell(c) for c in row] for row in rows]
    if not cells:
        return []
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]


def print_table(rows: Sequence[Sequence[Any]], file: TextIO | None = None) -> None:
    """Prints :func:`plain_table` of ``rows`` (header first) to ``file`` (default stdout)."""
    for line in plain_table(rows):
        print(line, file=file)


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types, recursively.

    Dataclasses become dicts (through their ``to_dict()`` when they have one), tuples and
    sets lists (sets sorted), NumPy scalars and arrays Python numbers and lists, paths
    strings.

    Raises:
        TypeError: a value of any other type (a bug in whoever built ``value``).
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "to_dict") and dataclasses.is_dataclass(value):
        return jsonable(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return [jsonable(v) for v in sorted(value)]
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"a value of type {type(value).__name__} is not JSON-able: {value!r}")
