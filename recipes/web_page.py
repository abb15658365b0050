"""A static web page that classifies photos in the browser with an export's ``.tflite``.

``zoo export RUN_OR_EXPORT_DIR --format web`` calls :func:`write_web_page`, which writes
``web/`` inside the export::

    web/index.html        the page (template: recipes/web_page.html)
    web/model*.tflite     a copy of the deployed .tflite (int8, else fp16, else float32)
    web/mediapipe/        with --vendor only: vision_bundle.mjs and wasm/ of the pinned
                          @mediapipe/tasks-vision, so the page works offline

The page runs MediaPipe Tasks for the web (``@mediapipe/tasks-vision``
:data:`TASKS_VISION_VERSION`, the npm package; the same C++ core as MediaPipe's Python,
Android and iOS Tasks, compiled to WebAssembly): pick or drop a photo, see the top-k
classes and their probabilities. By default it loads the bundle from jsDelivr
(:data:`CDN`) and every file it runs is checked against a pinned Subresource Integrity
hash (:data:`INTEGRITY`, sha384 of the npm package's files): the bundle through the
import map's ``integrity``, the WASM loader and binary and the model through
``fetch(url, {integrity})``. ``vendor`` copies those files from a local
``node_modules/@mediapipe/tasks-vision`` (``npm install @mediapipe/tasks-vision@1.1.0``),
checked against the same hashes.

Browsers refuse WebAssembly from ``file://``: serve the folder with any static server
that sends ``.wasm`` as ``application/wasm``, e.g. ``python -m http.server -d web``.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from recipes import export_format as fmt
from zoo.errors import InvalidValueError, MissingFileError

WEB_FORMAT = "web"
WEB_DIR = "web"
TEMPLATE = Path(__file__).with_name("web_page.html")
TASKS_VISION_VERSION = "1.1.0"
CDN = f"https://cdn.jsdelivr.net/npm/@mediapipe/tasks-vision@{TASKS_VISION_VERSION}"
BUNDLE = "vision_bundle.mjs"
# sha384 of the files of @mediapipe/tasks-vision 1.1.0 as npm publishes them (jsDelivr
# serves npm files byte for byte).
INTEGRITY = {
    BUNDLE: "sha384-K9SZSZsVUHJTcMp4orEz7jVOD7Ro/2+0a1VxJvrOorWMtdXCO/rYlF17bw+iomf4",
    "wasm/vision_wasm_internal.js": (
        "sha384-jtdjdNIo/J/KCH4Cdzr0WgtLSeu00Z2fb8m+3ZtlUjdU0qa7b2BY2DH+xDyT5h+Z"
    ),
    "wasm/vision_wasm_internal.wasm": (
        "sha384-/8GYMkLZzcgbPHE7bao2HMZy558ZB+mbLg8RZv/JcFMf6w+tTW6j0o6bigM78NVV"
    ),
    "wasm/vision_wasm_nosimd_internal.js": (
        "sha384-G4XQgb6NhKDFJabsQoCsg+N4lSd5gbyGOB4jge8N2MlTIPwczQOfHRaTOq9P7egr"
    ),
    "wasm/vision_wasm_nosimd_internal.wasm": (
        "sha384-plwF5Ls5qsJga9VXOt3Fx7weOIn1coDRZ0OELHCk+IUlAbziX2YEYqXC16C6zEoG"
    ),
}
PREFERENCE = ("tflite-int8", "tflite-fp16", "tflite")  # smallest download first
TOP_K = 5


def sri(data: bytes) -> str:
    """The Subresource Integrity value of ``data``: ``"sha384-"`` + base64 digest."""
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode("ascii")


def page_model(directory: Path) -> str:
    """The format the page runs: the first deployed ``.tflite`` of :data:`PREFERENCE`.

    Raises:
        MissingFileError: the export has no deployed ``.tflite``.
    """
    manifest = json.loads((directory / "assets" / fmt.MANIFEST_FILE).read_text("utf-8"))
    listed = manifest.get(fmt.DEPLOYED_KEY) or {}
    for name in PREFERENCE:
        if fmt.FORMATS[name].file in listed and (directory / fmt.FORMATS[name].file).is_file():
            return name
    raise MissingFileError(
        f"{directory} has no deployed .tflite for the page; add one: "
        f"`zoo export {directory} --format tflite --format web`."
    )


def vendor_root(path: str | Path) -> Path:
    """The ``@mediapipe/tasks-vision`` package directory in ``path`` (the package itself,
    or a folder holding ``node_modules/@mediapipe/tasks-vision``), version-checked.

    Raises:
        MissingFileError: no package there.
        InvalidValueError: another version than :data:`TASKS_VISION_VERSION`.
    """
    path = Path(path)
    for root in (path, path / "node_modules" / "@mediapipe" / "tasks-vision"):
        if (root / "package.json").is_file() and (root / BUNDLE).is_file():
            version = json.loads((root / "package.json").read_text("utf-8")).get("version")
            if version != TASKS_VISION_VERSION:
                raise InvalidValueError(
                    f"{root} holds @mediapipe/tasks-vision {version}; the page is pinned to "
                    f"{TASKS_VISION_VERSION}: npm install @mediapipe/tasks-vision@"
                    f"{TASKS_VISION_VERSION}."
                )
            return root
    raise MissingFileError(
        f"No @mediapipe/tasks-vision package at {path}; run `npm install "
        f"@mediapipe/tasks-vision@{TASKS_VISION_VERSION}` and pass --vendor node_modules/"
        "@mediapipe/tasks-vision (or the folder holding node_modules)."
    )


def write_web_page(
    export_dir: str | Path,
    vendor: str | Path | None = None,
    top_k: int = TOP_K,
    model_format: str | None = None,
    folder: str = WEB_DIR,
) -> Path:
    """Writes the page folder ``web/`` into an export (replacing an earlier one).

    Args:
        export_dir: an export with a deployed ``.tflite`` (``zoo export --format tflite``).
        vendor: a local ``@mediapipe/tasks-vision`` package to copy in (offline page);
            default: the page loads it from :data:`CDN`.
        top_k: classes shown per photo (at most the number of classes).
        model_format: the deployed ``.tflite`` format the page runs; default the first
            deployed one of :data:`PREFERENCE`.
        folder: the page folder's name inside the export.

    Returns:
        The folder written (``<export_dir>/<folder>``).

    Raises:
        MissingFileError: no export, no deployed ``.tflite``, or no package at ``vendor``.
        InvalidValueError: ``vendor`` holds another version, or files that do not match
            the pinned hashes.
    """
    directory = Path(export_dir)
    if not fmt.is_export(directory):
        raise MissingFileError(f"{directory} is not a zoo export; point to a run's export/.")
    meta = json.loads((directory / "assets" / fmt.METADATA_FILE).read_text("utf-8"))
    model_file = fmt.FORMATS[model_format or page_model(directory)].file
    if not (directory / model_file).is_file():
        raise MissingFileError(f"{directory} has no {model_file}; deploy it with `zoo export`.")
    model = (directory / model_file).read_bytes()
    package = vendor_root(vendor) if vendor is not None else None
    target = directory / folder
    staging = Path(tempfile.mkdtemp(prefix=".web-", dir=directory))
    try:
        (staging / model_file).write_bytes(model)
        base = "./mediapipe" if package is not None else CDN
        if package is not None:
            _copy_vendor(package, staging / "mediapipe")
        page = _render(meta, model_file, sri(model), base, min(top_k, len(meta["class_names"])))
        (staging / "index.html").write_text(page, "utf-8")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def _copy_vendor(package: Path, target: Path) -> None:
    wrong = []
    for name, integrity in INTEGRITY.items():
        data = (package / name).read_bytes()
        if sri(data) != integrity:
            wrong.append(name)
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_bytes(data)
    if wrong:
        raise InvalidValueError(
            f"{package}: {', '.join(wrong)} differ from @mediapipe/tasks-vision "
            f"{TASKS_VISION_VERSION} as npm publishes it; reinstall it with npm."
        )


def _render(meta: dict[str, Any], model_file: str, model_sri: str, base: str, top_k: int) -> str:
    from recipes.tflite_metadata import licenses, model_info

    info = model_info(meta)
    bundle = f"{base}/{BUNDLE}"
    importmap = {
        "imports": {"@mediapipe/tasks-vision": bundle},
        "integrity": {bundle: INTEGRITY[BUNDLE]},
    }
    config = {
        "model": model_file,
        "modelIntegrity": model_sri,
        "wasmBase": f"{base}/wasm",
        "integrity": {k.split("/")[-1]: v for k, v in INTEGRITY.items() if k != BUNDLE},
        "topK": top_k,
        "classNames": list(meta["class_names"]),
    }
    fields = {
        "__TITLE__": html.escape(info.name),
        "__DESCRIPTION__": html.escape(info.description),
        "__LICENSES__": html.escape(licenses(meta)),
        "__MODEL_FILE__": html.escape(model_file),
        "__MP_VERSION__": TASKS_VISION_VERSION,
        # JSON inside <script>: "</" escaped so no class name can close the element.
        "__IMPORTMAP__": json.dumps(importmap).replace("</", "<\\/"),
        "__CONFIG__": json.dumps(config).replace("</", "<\\/"),
    }
    template = TEMPLATE.read_text("utf-8")
    return re.sub(r"__[A-Z0-9_]+__", lambda m: fields.get(m.group(0), m.group(0)), template)
