"""What data sources exist and whether each is usable offline here (``zoo datasets``)."""

from __future__ import annotations

import os
from pathlib import Path

# tfds image-classification datasets worth naming; any other tfds name works too.
KNOWN_TFDS = ("tf_flowers", "beans", "cats_vs_dogs", "oxford_iiit_pet", "caltech101", "food101")


def available_sources() -> list[dict[str, str]]:
    """One row per source: ``source``, ``offline`` ("yes" / "no" / "local") and ``detail``.

    Checks the file system only; nothing is downloaded or decoded.
    """
    from zoo.data.fashion_mnist import fashion_mnist_search_dirs, find_idx

    rows = []
    found = next((d for d in fashion_mnist_search_dirs() if find_idx(d)), None)
    rows.append(
        {
            "source": "fashion_mnist",
            "offline": "yes" if found else "no",
            "detail": f"IDX files in {found}"
            if found
            else "not found; `apt-get install dataset-fashion-mnist` or download online",
        }
    )
    rows.append(
        {
            "source": "folder:PATH",
            "offline": "local",
            "detail": "your images, one sub-folder per class (JPEG/PNG/BMP/GIF/WebP)",
        }
    )
    rows.append(
        {
            "source": "arrays",
            "offline": "local",
            "detail": "Python: zoo.data.load((x, y)) with numpy arrays",
        }
    )
    rows.append(
        {
            "source": "tfds:NAME[:SPLIT]",
            "offline": "if prepared",
            "detail": "any tfds image-classification dataset (tfds downloads it when online)",
        }
    )
    data_dir = Path(os.environ.get("TFDS_DATA_DIR", Path.home() / "tensorflow_datasets"))
    for name in KNOWN_TFDS:
        prepared = data_dir / name
        here = prepared.is_dir() and any(prepared.rglob("dataset_info.json"))
        rows.append(
            {
                "source": f"tfds:{name}",
                "offline": "yes" if here else "no",
                "detail": f"prepared in {prepared}" if here else "downloads via tfds when online",
            }
        )
    return rows


def datasets_table() -> list[tuple[str, str, str]]:
    """:func:`available_sources` as table rows, header first (for ``zoo datasets``)."""
    rows = [("source", "offline here", "detail")]
    rows += [(r["source"], r["offline"], r["detail"]) for r in available_sources()]
    return rows
