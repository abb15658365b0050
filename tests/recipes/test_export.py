"""SavedModel export: layout, signatures in a fresh process, saved_model_cli, atomicity."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import export_testlib as lib
import keras
import numpy as np
import pytest

from recipes import export as export_lib
from recipes.export import ExportError, export_saved_model
from recipes.verify import verify_export
from zoo import fingerprint


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One export of a classifier with a frozen backbone, shared by this module."""
    model = lib.build_model()
    source = fingerprint.manifest(model)
    lib.freeze_backbone(model)
    path = export_saved_model(
        model,
        tmp_path_factory.mktemp("export") / "classifier",
        source_manifest=source,
        metadata={"recipe": {"name": "tiny", "epochs": 1}, "run": "r1"},
    ).path
    return model, source, path


def _files(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def test_export_layout_labels_metadata_and_manifest(exported):
    model, source, path = exported
    assets = path / "assets"
    assert (path / "saved_model.pb").is_file() and (path / "variables").is_dir()
    assert (assets / "labels.txt").read_text().splitlines() == lib.CLASS_NAMES

    meta = json.loads((assets / "metadata.json").read_text())
    assert meta["backbone"] == lib.BACKBONE
    assert meta["input_size"] == list(lib.INPUT_SIZE)
    assert meta["preprocessing"]["mode"] == "inception"
    assert meta["recipe"] == {"name": "tiny", "epochs": 1} and meta["extra"] == {"run": "r1"}
    assert meta["versions"]["keras"] == keras.__version__
    assert set(meta["versions"]) == {"zoo", "tensorflow", "keras"}

    zoo_manifest = json.loads((assets / "zoo_manifest.json").read_text())
    assert zoo_manifest["manifest"] == fingerprint.manifest(model)
    assert zoo_manifest["source"]["digest"] == source["digest"]
    assert set(zoo_manifest["frozen_in_all_stages"]) == fingerprint.layer_paths(model, "backbone")

    reloaded = keras.saving.load_model(path / "model.keras", safe_mode=True)
    assert fingerprint.manifest(reloaded)["digest"] == source["digest"]


FRESH_PROCESS = """
import sys, numpy as np, tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
x = np.load(sys.argv[2])
sig = loaded.signatures
png = [tf.io.encode_png(i).numpy() for i in x.astype(np.uint8)]
big = tf.image.resize(x, (40, 48)).numpy()
out = {
    "numpy": loaded.serving_default(x)["logits"],
    "tensor": sig["serving_default"](images=tf.constant(x))["logits"],
    "variable": sig["serving_default"](images=tf.Variable(x))["logits"],
    "variable_fn": loaded.serving_default(tf.Variable(x))["logits"],
    "uint8": sig["serving_uint8"](images=tf.constant(x.astype(np.uint8)))["logits"],
    "bytes": sig["serve_bytes"](image_bytes=tf.constant(png))["logits"],
    "one": sig["serving_default"](images=tf.constant(x[:1]))["logits"],
    "resized": sig["serving_default"](images=tf.constant(big))["logits"],
}
names = sig["serving_default"](images=tf.constant(x))["class_name"].numpy()
np.savez(sys.argv[3], names=np.array([n.decode() for n in names]), **{k: v.numpy() for k, v in out.items()})
"""


def test_fresh_process_serves_it_and_saved_model_cli_lists_the_signatures(exported, tmp_path):
    model, _, path = exported
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    cli = Path(sys.executable).parent / "saved_model_cli"
    show = subprocess.Popen(  # runs alongside the serving process below
        [cli, "show", "--dir", path, "--all"], stdout=subprocess.PIPE, text=True, env=env
    )
    x = np.random.default_rng(5).integers(0, 256, (3, *lib.INPUT_SIZE, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "serve.py"
    script.write_text(textwrap.dedent(FRESH_PROCESS))
    serve = [sys.executable, script, path, tmp_path / "x.npy", tmp_path / "out.npz"]
    subprocess.run(serve, check=True, env=env, timeout=300)
    shown, _ = show.communicate(timeout=300)
    assert show.returncode == 0

    out = np.load(tmp_path / "out.npz")
    expected = keras.ops.convert_to_numpy(model(x))
    for key in ("numpy", "tensor", "variable", "variable_fn", "uint8", "bytes"):
        np.testing.assert_allclose(out[key], expected, atol=1e-5, err_msg=key)
    np.testing.assert_allclose(out["one"], expected[:1], atol=1e-5)
    assert list(out["names"]) == [lib.CLASS_NAMES[i] for i in expected.argmax(-1)]
    resized = keras.ops.convert_to_numpy(
        model(keras.ops.image.resize(keras.ops.image.resize(x, (40, 48)), lib.INPUT_SIZE))
    )
    np.testing.assert_allclose(out["resized"], resized, atol=1e-4)
    assert np.abs(expected).max() > 0.1  # outputs that would show a preprocessing mistake

    for name in export_lib.SIGNATURES:
        assert f"signature_def['{name}']" in shown
    for output in export_lib.OUTPUTS:
        assert f"outputs['{output}']" in shown
    assert "inputs['images'] tensor_info:\n        dtype: DT_UINT8" in shown
    assert "inputs['image_bytes'] tensor_info:\n        dtype: DT_STRING" in shown


def _stray(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


def test_reexport_replaces_an_earlier_export_atomically(exported, tmp_path):
    model, source, earlier = exported
    target = Path(shutil.copytree(earlier, tmp_path / "out"))
    export_saved_model(model, target, source_manifest=source, metadata={"run": "second"})
    meta = json.loads((target / "assets" / "metadata.json").read_text())
    assert meta["extra"] == {"run": "second"}
    assert _stray(tmp_path) == []
    assert verify_export(target).passed


def _interrupt_after_labels(exc: BaseException):
    real = export_lib._write_assets

    def writer(directory, info, zoo_manifest, meta):
        (directory / "assets").mkdir(exist_ok=True)
        (directory / "assets" / "labels.txt").write_text("half-written\n")
        raise exc

    return real, writer


def test_interrupted_export_leaves_nothing_and_keeps_the_earlier_export(
    exported, tmp_path, monkeypatch
):
    model, source, earlier = exported
    _, writer = _interrupt_after_labels(KeyboardInterrupt())
    target = tmp_path / "out"
    monkeypatch.setattr(export_lib, "_write_assets", writer)
    with pytest.raises(KeyboardInterrupt):
        export_saved_model(model, target, source_manifest=source)
    assert not target.exists() and _stray(tmp_path) == []

    before = _files(earlier)
    _, writer = _interrupt_after_labels(RuntimeError("disk full"))
    monkeypatch.setattr(export_lib, "_write_assets", writer)
    with pytest.raises(RuntimeError, match="disk full"):
        export_saved_model(model, earlier, source_manifest=source)
    assert _files(earlier) == before
    assert _stray(earlier.parent) == []


def test_refuses_bad_targets_and_models_before_writing(exported, tmp_path):
    model, _, _ = exported
    occupied = tmp_path / "home"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a zoo export; refusing"):
        export_saved_model(model, occupied)
    assert (occupied / "notes.txt").read_text() == "keep me"

    with pytest.raises(ValueError, match="2 class names for 3 logits"):
        export_saved_model(model, tmp_path / "a", metadata={"class_names": ["x", "y"]})
    with pytest.raises(ValueError, match=r"empty or multi-line class names \['a\\nb'\]"):
        export_saved_model(model, tmp_path / "a", metadata={"class_names": ["a\nb", "c", "d"]})
    with pytest.raises(fingerprint.ManifestError, match="does not have"):
        export_saved_model(model, tmp_path / "a", frozen={"backbone/missing/kernel"})
    with pytest.raises(ValueError, match="must be JSON-able"):
        export_saved_model(model, tmp_path / "a", metadata={"recipe": object()})
    sequence = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"input shape \(None, 4\), expected"):
        export_saved_model(sequence, tmp_path / "a")
    partial = {"format": fingerprint.MANIFEST_FORMAT, "digest": "", "variables": []}
    with pytest.raises(ValueError, match="frozen variables are not in the source manifest"):
        export_saved_model(model, tmp_path / "a", source_manifest=partial)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_export_that_fails_verification_raises_and_writes_nothing(exported, tmp_path):
    model, source, _ = exported
    tampered = json.loads(json.dumps(source))
    entry = next(e for e in tampered["variables"] if e["path"] == "backbone/stem_conv/kernel")
    entry["sha256"] = "0" * 64
    with pytest.raises(ExportError, match="frozen variable backbone/stem_conv/kernel changed"):
        export_saved_model(model, tmp_path / "out", source_manifest=tampered)
    assert list(tmp_path.iterdir()) == []
