"""Hostile input and faults: each is one line on stderr naming the file, and exit 2.

Paths that leave their folder, decompression bombs, corrupt checkpoints, a full disk,
leftovers of a killed export, two runs in one directory, and many threads on one
Predictor. The CLI runs in-process (``recipes.cli.main``), the models are tiny.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recipes.cli import main

sys.path.insert(0, str(Path(__file__).parent))
import export_testlib as lib  # noqa: E402


def _error_line(capsys) -> str:
    """The one line the CLI printed to stderr for a user error."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("zoo: error: "), err
    return err[0]


# -- paths stay inside their folder ------------------------------------------------------------


def _multi_label_folder(root: Path, rows: list[str]) -> Path:
    root.mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((6, 6, 3), 40 * i, np.uint8)).save(root / f"{i}.png")
    (root / "labels.csv").write_text("path,labels\n" + "".join(f"{r}\n" for r in rows))
    return root


def _csv_recipe(tmp_path: Path, folder: Path) -> Path:
    import tomli_w

    recipe = {
        "data": {"source": f"folder:{folder}", "options": {"labels_csv": "labels.csv"}},
        "model": {
            "backbone": "efficientnet_lite0",
            "weights": "none",
            "head": {"multi_label": True},
        },
        "stages": [{"name": "s", "policy": "freeze_backbone", "epochs": 1, "learning_rate": 0.1}],
    }
    path = tmp_path / "csv.toml"
    path.write_text(tomli_w.dumps(recipe))
    return path


@pytest.mark.parametrize("escape", ["dotdot", "absolute", "symlink"])
def test_labels_csv_row_outside_the_folder_is_refused_before_it_is_read(
    tmp_path, capsys, monkeypatch, escape
):
    outside = tmp_path / "outside.png"
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(outside)
    value = {"dotdot": "../outside.png", "absolute": str(outside), "symlink": "link.png"}[escape]
    folder = _multi_label_folder(
        tmp_path / "photos", ["0.png,a", "1.png,b", f"{value},a;b", "2.png,a"]
    )
    if escape == "symlink":
        (folder / "link.png").symlink_to(outside)
    opened = []
    real_open = Image.open
    monkeypatch.setattr(
        Image, "open", lambda f, *a, **k: opened.append(str(f)) or real_open(f, *a, **k)
    )
    run_dir = tmp_path / "run"
    assert main(["run", str(_csv_recipe(tmp_path, folder)), "--out", str(run_dir)]) == 2
    line = _error_line(capsys)
    assert f"{folder / 'labels.csv'}" in line and "outside the image folder" in line
    assert f"line 4: {value!r}" in line  # the header is line 1
    assert ("absolute path" if escape == "absolute" else "leads outside") in line
    assert opened == []  # refused before any image, inside or out, was opened


def test_a_path_that_goes_out_and_back_in_is_accepted(tmp_path):
    from zoo import data

    folder = _multi_label_folder(
        tmp_path / "photos", ["0.png,a", "../photos/1.png,b", "sub/../2.png,a;b", "3.png,b"]
    )
    (folder / "sub").mkdir()
    ds = data.load(f"folder:{folder}", labels_csv="labels.csv", validation_fraction=0.0)
    assert ds.num_examples("train") == 4


def test_a_labels_csv_outside_the_folder_needs_an_absolute_path(tmp_path):
    from zoo import data
    from zoo.files import OutsideFolderError

    folder = _multi_label_folder(tmp_path / "photos", ["0.png,a", "1.png,b"])
    (tmp_path / "elsewhere.csv").write_text((folder / "labels.csv").read_text())
    with pytest.raises(OutsideFolderError, match=r"labels_csv '../elsewhere.csv' leads outside"):
        data.load(f"folder:{folder}", labels_csv="../elsewhere.csv")
    ds = data.load(f"folder:{folder}", labels_csv=str(tmp_path / "elsewhere.csv"))
    assert ds.class_names == ["a", "b"]


# -- mixed_precision = "auto" with label-mixing augmentation -----------------------------------


AUGMENT_NAMES = ["random_crop", "flip", "rotation", "zoom", "rand_augment", "mixup", "cutmix"]


def _catalog_stages(name: str, augment: list[str], num_classes: int = 3) -> tuple:
    """A catalog recipe's stages on the tiny backbone, its fine-tune stage augmented."""
    import json

    from recipes import runner
    from recipes.config import load_recipe

    lib.ensure_registered()
    overrides = [
        f"model.backbone={lib.BACKBONE}",
        "model.weights=none",
        "data.image_size=[32,32]",
        f"data.augment={json.dumps(augment)}",
        "stages.1.augment=true",
        "stages.1.blocks=1",
        "stages.1.epochs=1",
    ]
    recipe = load_recipe(name, overrides)
    return recipe, runner._stages(recipe, num_classes)


@pytest.fixture(scope="module")
def tiny_model():
    return lib.build_model()


@pytest.mark.parametrize("recipe_name", ["fashion-mnist-lite0", "flowers-inception-v3", "folder"])
def test_catalog_settings_take_each_augmentation_name(tiny_model, recipe_name):
    """What the settings probe and fit do with a stage's labels, per augmentation name:
    numpy labels through the stage's label transform, tensors through its augmentation."""
    import tensorflow as tf

    from zoo.training.compile import loss_and_metrics

    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    y = np.array([0, 1, 2, 1])
    for augment in AUGMENT_NAMES:
        recipe, stages = _catalog_stages(recipe_name, [augment])
        assert recipe.run.mixed_precision == "auto" and recipe.run.jit_compile == "auto"
        stage = stages[1]
        _, _, to_labels = loss_and_metrics(tiny_model, stage)
        labels = y if to_labels is None else np.asarray(to_labels(x, y)[1])
        images, mixed = stage.augment(tf.constant(x), tf.constant(y))
        assert images.shape[0] == 4 and np.isfinite(images.numpy()).all(), augment
        if stage.augment.soft_labels:
            assert labels.shape == (4, 3) and mixed.shape == (4, 3), augment
            np.testing.assert_allclose(mixed.numpy().sum(axis=1), 1.0, rtol=1e-5)
        else:
            assert np.array_equal(mixed.numpy(), y), augment


def test_auto_precision_probe_with_mixup_and_cutmix_trains(tmp_path):
    """``mixed_precision = "auto"`` (the catalog's setting) with MixUp and CutMix in the
    stage the probe times: the probe runs the mixing stage and training goes on (each
    other augmentation name is checked above, without the cost of training)."""
    from zoo.training import fine_tune

    recipe, stages = _catalog_stages("flowers-inception-v3", ["flip", "mixup", "cutmix"])
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    y = np.arange(8) % 3
    result = fine_tune(
        lib.build_model(),
        (x, y),
        None,
        stages[1:],
        batch_size=4,
        verbose=0,
        **recipe.run.fine_tune_kwargs(),
    )
    probe = result.settings_probe
    assert probe["probed"] is True and probe["stage"] == "fine-tune"
    assert [c["mixed_precision"] for c in probe["candidates"]][:2] == [None, "bfloat16"]
    losses = result.stages[0].history["loss"]
    assert len(losses) == 1 and np.isfinite(losses).all()


# -- zoo predict: bombs and bad files among good ones ------------------------------------------


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    from recipes.export import export_saved_model

    model = lib.build_model()
    lib.freeze_backbone(model)
    return export_saved_model(model, tmp_path_factory.mktemp("hostile") / "export").path


def _bomb_png(path: Path, side: int = 20_000) -> Path:
    """A valid 1-bit greyscale PNG of side x side black pixels, a few tens of KB: more
    pixels than Pillow's decompression-bomb limit (2 x Image.MAX_IMAGE_PIXELS)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    row = b"\0" * (1 + (side + 7) // 8)  # filter byte, then the packed bits
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )
    return path


def _good_png(path: Path, seed: int) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (*lib.INPUT_SIZE, 3), np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_a_decompression_bomb_is_one_line_naming_it(export_dir, tmp_path, capsys):
    bomb = _bomb_png(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 200_000
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's own limit, kept
    assert main(["predict", str(export_dir), str(bomb)]) == 2
    line = _error_line(capsys)
    assert str(bomb) in line and "decompression bomb" in line and "MAX_IMAGE_PIXELS" in line


def test_predict_goes_on_past_bad_files_and_exits_2(export_dir, tmp_path, capsys):
    good = _good_png(tmp_path / "good.png", seed=1)
    other = _good_png(tmp_path / "other.png", seed=2)
    text = tmp_path / "text.png"
    text.write_text("not an image")
    truncated = tmp_path / "truncated.png"  # Pillow reads its header; the decoder fails
    truncated.write_bytes(_good_png(tmp_path / "whole.png", seed=3).read_bytes()[:-200])
    files = [good, text, other, truncated, good, tmp_path / "missing.png"]
    assert main(["predict", str(export_dir), *map(str, files), "--top-k", "1"]) == 2
    captured = capsys.readouterr()
    printed = [line for line in captured.out.splitlines() if not line.startswith(" ")]
    assert printed == [str(good), str(other), str(good)]
    errors = captured.err.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("zoo: error: ") for e in errors)
    for line, name in zip(errors, ["text.png", "missing.png", "truncated.png"], strict=True):
        assert name in line, (name, line)
    assert "cannot be decoded (Invalid PNG data" in errors[2]  # the decoder's own words
    alone = main(["predict", str(export_dir), str(good), str(other), "--top-k", "1"])
    assert alone == 0 and capsys.readouterr().err == ""


# -- runs: corrupt checkpoints, a full disk, leftovers, two processes --------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished run of the tiny backbone (one head epoch, exported): (recipe, run dir)."""
    root = tmp_path_factory.mktemp("tiny_run")
    photos = lib.colour_squares(root / "photos", per_class=6, size=16)
    lib.ensure_registered()
    recipe = root / "tiny.toml"
    text = lib.tiny_recipe(photos, top_epochs=None)
    recipe.write_text(text.replace('"efficientnet_lite0"', f'"{lib.BACKBONE}"'))
    recipe.write_text(
        recipe.read_text().replace("image_size = [ 32, 32,]", "image_size = [16, 16]")
    )
    assert main(["run", str(recipe), "--out", str(root / "run")]) == 0
    return recipe, root / "run"


def _copy_run(tiny_run, tmp_path: Path) -> Path:
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run[1], run_dir)
    return run_dir


@pytest.mark.parametrize("damage", ["truncated", "not a zip"])
def test_resume_from_a_corrupt_checkpoint_says_so_and_keeps_it(tiny_run, tmp_path, capsys, damage):
    run_dir = _copy_run(tiny_run, tmp_path)
    checkpoint = run_dir / "checkpoints" / "last.npz"
    whole = checkpoint.read_bytes()
    checkpoint.write_bytes(whole[: len(whole) // 2] if damage == "truncated" else b"PK\0garbage")
    damaged = checkpoint.read_bytes()
    report = (run_dir / "report.json").read_bytes()
    capsys.readouterr()
    assert main(["run", str(tiny_run[0]), "--out", str(run_dir), "--resume"]) == 2
    line = _error_line(capsys)
    assert str(checkpoint) in line and "corrupt or truncated" in line and "delete" in line
    assert checkpoint.read_bytes() == damaged  # never started over silently
    assert (run_dir / "report.json").read_bytes() == report


def test_a_full_disk_while_checkpointing_names_the_file(tiny_run, tmp_path, capsys, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    run_dir = tmp_path / "run"
    assert main(["run", str(tiny_run[0]), "--out", str(run_dir)]) == 2
    line = _error_line(capsys)
    checkpoint = run_dir / "checkpoints" / "last.npz"
    assert f"No space left on the device while writing {checkpoint}" in line
    assert "needed" in line and "free" in line
    assert list(checkpoint.parent.iterdir()) == []  # nothing half-written


def test_a_full_disk_while_exporting_names_the_export(tiny_run, tmp_path, capsys, monkeypatch):
    """--resume of a finished run exports again (the earlier export is removed first); the
    disk fills in model.save: nothing is left. The stale staging directories a killed
    export left are removed when the run starts."""
    import errno

    import keras

    run_dir = _copy_run(tiny_run, tmp_path)
    export = run_dir / "export"
    stale = [run_dir / ".export.tmp-killed", run_dir / ".export.old-killed"]
    for path in stale:
        path.mkdir()
        (path / "saved_model.pb").write_bytes(b"stale")

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", full)
    capsys.readouterr()
    assert main(["run", str(tiny_run[0]), "--out", str(run_dir), "--resume"]) == 2
    line = _error_line(capsys)
    assert f"No space left on the device while writing {export}" in line and "needed" in line
    assert list(run_dir.glob(".export*")) == []
    assert not export.exists()


def test_an_interrupted_exports_directory_is_never_read(export_dir, tmp_path, capsys):
    import shutil

    from recipes.export import export_saved_model
    from recipes.predict import Predictor

    staged = tmp_path / ".export.tmp-abc123"  # complete, as a kill -9 before the swap leaves it
    shutil.copytree(export_dir, staged)
    assert main(["verify", str(staged)]) == 2
    line = _error_line(capsys)
    assert str(staged) in line and "interrupted" in line
    with pytest.raises(ValueError, match="interrupted"):
        Predictor(staged)
    model = lib.build_model()
    lib.freeze_backbone(model)
    export_saved_model(model, tmp_path / "export")  # the next export there removes it
    assert not staged.exists() and (tmp_path / "export" / "saved_model.pb").is_file()


_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.write(fd, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_second_process_in_a_run_directory_is_refused_naming_the_holder(
    tiny_run, tmp_path, capsys
):
    import subprocess

    run_dir = _copy_run(tiny_run, tmp_path)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    holders = []
    try:
        for directory in (run_dir, fresh):
            holder = subprocess.Popen(
                [sys.executable, "-c", _HOLDER, str(directory / ".zoo-run.lock")],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            holders.append(holder)
            assert holder.stdout.readline().strip() == "locked"
        capsys.readouterr()
        for directory, holder, extra in (
            (run_dir, holders[0], ["--resume"]),
            (fresh, holders[1], []),
        ):
            assert main(["run", str(tiny_run[0]), "--out", str(directory), *extra]) == 2
            line = _error_line(capsys)
            assert f"the run directory {directory} is in use by process {holder.pid}" in line
        assert not (fresh / "recipe.toml").exists()
    finally:
        for holder in holders:
            holder.communicate("")
    from zoo.files import exclusive_lock

    with exclusive_lock(run_dir / ".zoo-run.lock", "the run"):  # free once the holder ended
        pass
