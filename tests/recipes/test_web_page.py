"""The web page of ``zoo export --format web`` in a real browser: Debian's headless
``chromium`` driven by Playwright (``executable_path``; no browser is downloaded), the
page served on a loopback port, photos picked through the page's own file input, and
the shown top-1 class and score compared with MediaPipe's Python Tasks on the same file.

``scripts/setup.sh`` installs ``chromium`` (apt) and ``@mediapipe/tasks-vision`` (npm,
into ``.web-vendor/``).
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest

from recipes import web_page
from recipes.cli import main
from tests.recipes import mediapipe_testlib as mpl

REPO = Path(__file__).resolve().parents[2]
VENDOR = REPO / ".web-vendor" / "node_modules" / "@mediapipe" / "tasks-vision"
CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    shared = mpl.colour_export(tmp_path_factory)
    return shutil.copytree(shared.export_dir, tmp_path_factory.mktemp("web") / "export")


def test_the_default_page_loads_the_pinned_bundle_from_the_cdn_with_integrity(export_dir):
    folder = web_page.write_web_page(export_dir)
    assert sorted(p.name for p in folder.iterdir()) == ["index.html", "model_int8.tflite"]
    page = (folder / "index.html").read_text()
    bundle = f"{web_page.CDN}/{web_page.BUNDLE}"
    importmap = json.loads(page.split('<script type="importmap">')[1].split("</script>")[0])
    assert importmap["imports"]["@mediapipe/tasks-vision"] == bundle
    assert importmap["integrity"][bundle] == web_page.INTEGRITY[web_page.BUNDLE]
    model = (folder / "model_int8.tflite").read_bytes()
    assert model == (export_dir / "model_int8.tflite").read_bytes()
    assert web_page.sri(model) in page


def test_vendor_is_version_checked_and_needs_web(export_dir, tmp_path, capsys):
    fake = tmp_path / "tasks-vision"
    fake.mkdir()
    (fake / "package.json").write_text('{"version": "0.10.0"}')
    (fake / web_page.BUNDLE).write_text("")
    cases = {
        "pinned to 1.1.0": ["--format", "web", "--vendor", str(fake)],
        "No @mediapipe/tasks-vision package": ["--format", "web", "--vendor", str(tmp_path)],
        "add --format web": ["--format", "tflite", "--vendor", str(fake)],
    }
    for expected, argv in cases.items():
        assert main(["export", str(export_dir), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1, err


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".wasm": "application/wasm",
        ".mjs": "text/javascript",
        ".js": "text/javascript",
    }

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def served(export_dir):
    """The export served on 127.0.0.1 with two pages: ``web/`` by ``zoo export --format web
    --vendor`` (the int8 file) and ``web_float/`` (the float32 file); yields the base URL."""
    if CHROMIUM is None or not VENDOR.is_dir():
        pytest.skip("needs Debian's chromium and .web-vendor/ (bash scripts/setup.sh)")
    assert main(["export", str(export_dir), "--format", "web", "--vendor", str(VENDOR)]) == 0
    web_page.write_web_page(export_dir, VENDOR, model_format="tflite", folder="web_float")
    handler = functools.partial(_Handler, directory=str(export_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _three_images(directory: Path, tmp_path_factory) -> list[Path]:
    """A red probe and two half-and-half blends (red/green, green/blue): scores that are
    not saturated, so comparing them means something."""
    import numpy as np
    from PIL import Image

    probes = mpl.colour_export(tmp_path_factory).probes
    pixels = [np.asarray(Image.open(p), np.float32) for p in probes[:3]]
    images = [pixels[0], (pixels[0] + pixels[1]) / 2, (pixels[1] + pixels[2]) / 2]
    paths = []
    for i, image in enumerate(images):
        paths.append(directory / f"image{i}.png")
        Image.fromarray(np.round(image).astype(np.uint8)).save(paths[-1])
    return paths


def _mediapipe_top1(model: Path, probes) -> list[tuple[str, float]]:
    import mediapipe as mp
    from mediapipe.tasks import python as mpt
    from mediapipe.tasks.python import vision

    options = vision.ImageClassifierOptions(
        base_options=mpt.BaseOptions(model_asset_path=str(model)), max_results=1
    )
    with vision.ImageClassifier.create_from_options(options) as classifier:
        found = [classifier.classify(mp.Image.create_from_file(str(p))) for p in probes]
    return [
        (r.classifications[0].categories[0].category_name, r.classifications[0].categories[0].score)
        for r in found
    ]


@pytest.mark.parametrize(
    "folder, model", [("web", "model_int8.tflite"), ("web_float", "model.tflite")]
)
def test_the_page_classifies_photos_in_chromium_as_mediapipe_python_does(
    served, export_dir, folder, model, tmp_path, tmp_path_factory
):
    from playwright.sync_api import sync_playwright

    probes = _three_images(tmp_path, tmp_path_factory)
    expected = _mediapipe_top1(export_dir / folder / model, probes)
    assert expected[0][0] == "red"
    shown = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{served}/{folder}/index.html")
            page.wait_for_selector("body[data-state=ready]", timeout=60_000)
            assert model in page.locator("footer").inner_text()
            for probe in probes:
                page.evaluate("document.body.dataset.state = 'picking'")
                page.set_input_files("#file", str(probe))
                page.wait_for_selector("body[data-state=done]", timeout=30_000)
                top = page.locator("#results li").first
                shown.append(
                    (top.locator(".label").inner_text(), top.locator(".score").inner_text())
                )
            page.screenshot(path=str(tmp_path / "page.png"))
            assert not errors, errors
        finally:
            browser.close()
    print(folder, "page:", shown, "MediaPipe Python:", expected)
    for (name, score), (want_name, want_score) in zip(shown, expected, strict=True):
        assert name == want_name
        assert float(score) == pytest.approx(want_score, abs=1e-3)
    assert (tmp_path / "page.png").stat().st_size > 0
