"""Shared setup of the tests and the docs' blocks (offline, isolated caches), and the
Python blocks of README.md and docs/*.md collected as tests, with what they need.

Each block runs as written, with pytest-markdown-docs' collector for Markdown files (a
block marked ``python notest`` is skipped, and the page says why beside it). Only its
Markdown collector is used: its ``--markdown-docs`` option would also import every test
module to scan docstrings, which the tests' own imports do not survive.

A block about a finished run names the fixture ``fm_run`` (```` ```python fixture:fm_run ````):
it runs in a folder holding ``runs/fm``, a small ``fashion-mnist-lite0`` run with LiteRT and
ONNX files, and ``boot.png``, a Fashion-MNIST ankle boot.
"""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["ZOO_OFFLINE"] = "1"  # never try the network from tests or the docs' blocks

import pytest  # noqa: E402
from pytest_markdown_docs.plugin import MarkdownTextFile  # noqa: E402

ROOT = Path(__file__).resolve().parent
PAGES = {ROOT / "README.md", *(ROOT / "docs").glob("*.md")}
# The main job, shrunk: 100 training images at 32 px, one epoch a stage, evaluated on its
# 60 validation images instead of the 10,000 test images.
SMALL_RUN = [
    "data.train_size=100",
    "data.image_size=[32, 32]",
    "data.validation_fraction=0.001",
    "data.evaluate_on=validation",
    "stages.0.epochs=1",
    "stages.1.epochs=1",
    'export.formats=["saved_model", "tflite", "onnx"]',
]


def pytest_collect_file(file_path, parent):
    if Path(file_path).resolve() in PAGES:
        return MarkdownTextFile.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session", autouse=True)
def isolated_caches(tmp_path_factory):
    """Points Keras' and zoo's caches at a per-session temporary directory (the tests and
    the docs' blocks alike)."""
    root = tmp_path_factory.mktemp("caches")
    os.environ["KERAS_HOME"] = str(root / "keras")
    os.environ["ZOO_HOME"] = str(root / "zoo")
    yield root


@pytest.fixture(scope="session")
def _fm_run_folder(tmp_path_factory) -> Path:
    from PIL import Image

    from recipes.runner import run_recipe
    from zoo.data.fashion_mnist import fashion_mnist_search_dirs, find_idx, read_idx

    folder = tmp_path_factory.mktemp("docs")
    result = run_recipe(
        "fashion-mnist-lite0", folder / "runs" / "fm", overrides=SMALL_RUN, echo=None
    )
    assert result.exit_code == 0, result
    files = next(f for d in fashion_mnist_search_dirs() if (f := find_idx(d)))
    boot = Image.fromarray(read_idx(files["test_images"])[0]).convert("RGB")  # class 9
    boot.save(folder / "boot.png")
    return folder


@pytest.fixture
def fm_run(_fm_run_folder, monkeypatch) -> Path:
    monkeypatch.chdir(_fm_run_folder)
    return _fm_run_folder
