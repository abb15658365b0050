"""Image folders as a source: one sub-folder per class, or a labels CSV (multi-label)."""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from zoo.data import images as _images
from zoo.data.datasource import (
    CorruptImagesError,
    DataSource,
    build_source,
    count_labels,
    make_splits,
)
from zoo.data.plans import SplitPlan
from zoo.errors import InvalidValueError, MissingFileError
from zoo.files import OutsideFolderError, path_inside


def load_folder(path: str, options: dict[str, Any]) -> DataSource:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise MissingFileError(
            f"Image folder {root} does not exist or is not a folder; expected a folder with "
            "one sub-folder of images per class."
        )
    root = root.resolve()
    if options.get("labels_csv"):
        if options["train_size"] is not None or options["per_class"] is not None:
            raise InvalidValueError(
                "train_size / per_class subsample by class, which a multi-label labels_csv "
                "does not have; leave them out or list fewer files in the CSV."
            )
        class_names, all_files = _labels_csv(root, options["labels_csv"])
    else:
        class_names, all_files = _class_folders(root)
    exif = bool(options.get("exif_transpose", False))
    reasons = _images.check_images([p for p, _ in all_files], exif_transpose=exif)
    skipped = [(str(p), r) for (p, _), r in zip(all_files, reasons, strict=True) if r is not None]
    if skipped and options.get("strict"):
        listing = "; ".join(f"{p}: {r}" for p, r in skipped)
        raise CorruptImagesError(
            f"strict=True and {len(skipped)} file(s) in {root} cannot be decoded: {listing}. "
            "Fix or remove them, or load with strict=False to skip them."
        )
    good = [(p, label) for (p, label), r in zip(all_files, reasons, strict=True) if r is None]
    labels = np.array([label for _, label in good], dtype=all_files[0][1].dtype)
    counts = count_labels(labels, len(class_names))
    emptied = [name for name, k in zip(class_names, counts, strict=True) if k == 0]
    if emptied:
        raise InvalidValueError(
            f"Class(es) {', '.join(emptied)} in {root} have no decodable image "
            f"({len(skipped)} file(s) skipped, see the list): "
            + "; ".join(f"{p}: {r}" for p, r in skipped[:10])
        )
    paths = [str(p) for p, _ in good]
    identities = [Path(p).relative_to(root).as_posix() for p in paths]
    n_cls = len(class_names)

    def make_plan(positions: np.ndarray) -> SplitPlan:
        return SplitPlan(
            "files",
            n_cls,
            [identities[i] for i in positions],
            labels[positions],
            paths=[paths[i] for i in positions],
            exif_transpose=exif,
        )

    plans = make_splits(identities, labels, options, make_plan)

    def content_key(split: str) -> str:
        h = hashlib.sha256(f"exif={exif}".encode())
        for p in plans[split].paths:
            st = os.stat(p)
            h.update(f"{st.st_size}:{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    data = build_source(f"folder:{root}", class_names, plans, options, skipped, content_key)
    data.options["exif_transpose"] = exif
    if options.get("labels_csv"):
        data.options["labels_csv"] = str(options["labels_csv"])
    data.origin = str(root)
    return data


def _class_folders(root: Path) -> tuple[list[str], list[tuple[Path, np.int64]]]:
    """Class names (sub-folders) and ``(file, int label)`` of every image under them."""
    class_names, files = _images.list_class_files(root)
    if len(class_names) < 2:
        raise InvalidValueError(
            f"{root} has {len(class_names)} class folder(s) ({', '.join(class_names) or 'none'});"
            " expected one sub-folder per class and at least 2 classes."
        )
    no_files = [name for name in class_names if not files[name]]
    if no_files:
        raise InvalidValueError(
            f"Empty class folder(s) in {root}: {', '.join(no_files)} (no "
            f"{'/'.join(_images.IMAGE_EXTENSIONS)} files); add images or remove the folder(s)."
        )
    return class_names, [
        (p, np.int64(label)) for label, name in enumerate(class_names) for p in files[name]
    ]


def _labels_csv(root: Path, csv_path: str | os.PathLike) -> tuple[list[str], list[tuple]]:
    """Class names and ``(file, multi-hot float32 label)`` from ``path,label1;label2`` rows.

    Paths are relative to ``root`` and must stay inside it (:func:`zoo.files.path_inside`:
    no absolute paths, no ``..`` or symbolic link leading out); a row that leaves it is
    refused before its file is looked at. A relative ``csv_path`` is inside ``root`` too.
    An optional first row ``path,labels`` is a header. Every problem (a path outside the
    folder, a missing file, a row without labels, a duplicate path) is listed at once, by
    line number in the CSV.
    """
    if Path(csv_path).is_absolute():
        table = Path(csv_path)
    else:
        try:
            table = path_inside(root, csv_path)
        except OutsideFolderError as error:
            raise OutsideFolderError(
                f"labels_csv {error}; give an absolute path for a CSV kept elsewhere."
            ) from error
    if not table.is_file():
        raise MissingFileError(
            f"Labels CSV {table} does not exist; expected rows 'path,label1;label2' with "
            f"paths relative to {root}."
        )
    with open(table, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    if rows and [c.strip().lower() for c in rows[0][1]] == ["path", "labels"]:
        rows = rows[1:]
    problems, escapes, entries, seen = [], [], [], set()
    for line, row in rows:
        names = sorted({n.strip() for n in (row[1] if len(row) > 1 else "").split(";")} - {""})
        rel = row[0].strip()
        if len(row) != 2 or not names:
            problems.append(f"line {line} {row!r}: expected 'path,label1;label2'")
            continue
        try:
            path = path_inside(root, rel)
        except OutsideFolderError as error:
            escapes.append(f"line {line}: {error}")
            continue
        if rel in seen:
            problems.append(f"line {line}: {rel} listed twice")
        elif not path.is_file():
            problems.append(f"line {line}: no file {path}")
        else:
            seen.add(rel)
            entries.append((path, names))
    if escapes:
        raise OutsideFolderError(
            f"Labels CSV {table} names files outside the image folder: {'; '.join(escapes)}. "
            f"Every path must be relative to {root} and stay inside it; move the files in."
        )
    class_names = sorted({n for _, names in entries for n in names})
    if not problems and len(class_names) < 2:
        problems.append(f"{len(class_names)} label(s) in all rows; expected at least 2")
    if problems:
        raise InvalidValueError(f"Bad labels CSV {table}: " + "; ".join(problems) + ".")
    index = {name: i for i, name in enumerate(class_names)}
    files = []
    for path, names in entries:
        multi_hot = np.zeros(len(class_names), dtype=np.float32)
        multi_hot[[index[n] for n in names]] = 1.0
        files.append((path, multi_hot))
    return class_names, files
