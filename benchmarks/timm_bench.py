"""The peer: timm (PyTorch) on the same backbone, input, batch and precision as zoo.

timm is not a dependency of zoo: it lives in the optional ``peer`` extra, installed by
``scripts/setup_peer.sh`` into ``.venv-peer`` beside TensorFlow, so the benchmarks run both
in the same process layout. Where timm is not installed (the plain ``.venv``), every timm
figure is the string :data:`SKIP_NEEDS_PEER` instead of a number, never an error.

timm runs the way its users run inference on a CPU: ``timm.create_model(name,
pretrained=False)``, ``eval()``, channels-last memory, float32, eager calls inside
``torch.inference_mode()``, ``torch.set_num_threads`` = the cores this process may use.
Random weights: speed does not depend on their values. On a GPU (``device="cuda"``, or
``"auto"`` where CUDA is available) the peer runs as timm's users train there: model and
batch on the GPU, ``torch.autocast`` bfloat16 (AMP), channels-last, optionally
``torch.compile``, each timed call ended by ``torch.cuda.synchronize()``. Nothing here
imports torch or timm at module level.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.common import cores
from benchmarks.model_bench import peak_gflops

SKIP_NEEDS_PEER = "skipped: needs the peer extra (scripts/setup_peer.sh)"

# zoo backbone -> the same architecture in timm.
TIMM_NAMES = {
    "efficientnet_lite0": "tf_efficientnet_lite0",
    "mobilenet_v2": "mobilenetv2_100",
    "efficientnet_b0": "efficientnet_b0",
    "resnet50": "resnet50",
    "inception_v3": "inception_v3",
}


def has_timm() -> bool:
    """Whether timm is installed here (found without importing it).

    A timm that is installed but fails to import (say, a torchvision built for another
    torch) is not "absent": importing it later raises, and the measurement reports it.
    """
    return importlib.util.find_spec("timm") is not None


def timm_model(backbone: str, num_classes: int, device: str = "cpu") -> Any:
    """timm's model for zoo's ``backbone``: random weights, eval mode, channels-last.

    Args:
        backbone: a key of :data:`TIMM_NAMES`.
        num_classes: classes of the new head (as zoo's classifier has).
        device: torch device the model is moved to.

    Returns:
        A ``torch.nn.Module``: ``(batch, 3, height, width)`` float32 -> logits
        ``(batch, num_classes)``.

    Raises:
        KeyError: ``backbone`` has no timm counterpart listed.
    """
    import timm
    import torch

    torch.set_num_threads(cores())
    model = timm.create_model(TIMM_NAMES[backbone], pretrained=False, num_classes=num_classes)
    return model.eval().to(device=device, memory_format=torch.channels_last)


def resolve_device(device: str) -> str:
    """``"auto"``: ``"cuda"`` where torch sees a GPU, else ``"cpu"``; others as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def timm_runner(backbone: str, num_classes: int) -> Callable[[np.ndarray], np.ndarray]:
    """A callable like zoo's runtimes: float32 images ``(batch, h, w, 3)`` -> logits.

    The NHWC array is handed to torch as an NCHW view of the same memory, which is
    exactly channels-last: no copy, no layout change, the input zoo's runtimes get.
    """
    import torch

    model = timm_model(backbone, num_classes)

    def run(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images, np.float32)).permute(0, 3, 1, 2)
        with torch.inference_mode():
            return model(x).numpy()

    return run


def versions() -> dict[str, str | None]:
    """torch, torchvision and timm versions (None where absent), for the results file."""
    from benchmarks.common import version

    return {name: version(name) for name in ("torch", "torchvision", "timm")}


# zoo's top 2 blocks (``BackboneSpec.blocks[-2:]``) as timm module names. BatchNorm stays
# frozen in both, so the BatchNorm layers inside these modules are not trained.
TOP2_MODULES = {
    "inception_v3": ("Mixed_7b", "Mixed_7c"),  # zoo: mixed9, mixed10
    "resnet50": ("layer4.1", "layer4.2"),  # zoo: conv5_block2, conv5_block3
    "efficientnet_b0": ("blocks.6", "conv_head"),  # zoo: block7a, top
    "mobilenet_v2": ("blocks.6", "conv_head"),  # zoo: block_16, top
    "efficientnet_lite0": ("blocks.6", "conv_head"),  # zoo: block7a, top
}


def measure_timm_peer(
    backbone: str,
    batch_size: int = 32,
    input_size: int | None = None,
    repeats: int = 5,
    num_classes: int = 10,
    train_batch_size: int | None = None,
    train_input_size: int | None = None,
    device: str = "cpu",
    amp: str | None = None,
    compile: bool = False,
) -> dict[str, Any]:
    """timm's forward images/s and top-2-blocks training step images/s for ``backbone``.

    The training step runs at ``train_batch_size`` / ``train_input_size`` (default the
    forward's), so each figure can match the zoo measurement it is compared with.

    Forward: the backbone without its classifier (``num_classes=0``, pooled features) in
    ``torch.inference_mode()``. Training step: a ``num_classes`` head, every parameter
    frozen except those of :data:`TOP2_MODULES` and the head, BatchNorm frozen (eval mode,
    its affine parameters frozen too), Adam, cross-entropy on random labels. Random
    weights, float32, channels-last, ``torch.set_num_threads(cores)``; one warm-up call,
    then medians of ``repeats``.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (:func:`resolve_device`); model and
            batches live there, and CUDA calls are synchronized before a timer stops.
        amp: ``"bfloat16"`` runs forward and training step under ``torch.autocast`` in
            that dtype (the weights and Adam stay float32, as timm's ``--amp`` does);
            None: float32.
        compile: wrap both models in ``torch.compile`` (its compile time falls in the
            warm-up call, reported apart as ``first_call_seconds``).

    Returns:
        ``forward_images_per_second``, ``train_step_images_per_second``, ``trainable_params``,
        ``timm_model``, ``batch_size``, ``input_size``, ``device``, ``precision``,
        ``compiled``, ``first_call_seconds``, ``versions``; without timm
        ``{"skipped": SKIP_NEEDS_PEER, ...}`` with those numbers None.
    """
    fields = ("forward_images_per_second", "train_step_images_per_second")
    if not has_timm():
        return {"skipped": SKIP_NEEDS_PEER, **dict.fromkeys(fields)}
    import torch

    from benchmarks.common import time_calls
    from zoo.registry import get_spec

    size = input_size or get_spec(backbone).input_size[0]
    train_size = train_input_size or get_spec(backbone).input_size[0]
    train_batch = train_batch_size or batch_size
    device = resolve_device(device)
    x = _pixels(batch_size, size).to(device)
    x_train = _pixels(train_batch, train_size).to(device)
    labels = np.random.default_rng(1).integers(0, num_classes, train_batch)
    y = torch.from_numpy(labels).to(device)
    autocast = _autocast(device, amp)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    features = timm_model(backbone, num_classes=0, device=device)
    model = timm_model(backbone, num_classes, device=device)
    trainable = _freeze_all_but_top2(model, backbone)
    optimizer = torch.optim.Adam(trainable, lr=1e-4)
    run_features, run_model = features, model
    if compile:
        run_features, run_model = torch.compile(features), torch.compile(model)

    def forward() -> None:
        with torch.inference_mode(), autocast():
            run_features(x)
        sync()

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = torch.nn.functional.cross_entropy(run_model(x_train), y)
        loss.backward()
        optimizer.step()
        sync()

    timings = {
        field: time_calls(fn, repeats)
        for field, fn in zip(fields, (forward, train_step), strict=True)
    }
    rates = {
        field: batch / timings[field]["median_seconds"]
        for field, batch in zip(fields, (batch_size, train_batch), strict=True)
    }
    return {
        "backbone": backbone,
        "timm_model": TIMM_NAMES[backbone],
        "batch_size": batch_size,
        "input_size": [size, size],
        "train_batch_size": train_batch,
        "train_input_size": [train_size, train_size],
        "trainable_params": sum(p.numel() for p in trainable),
        "device": _device_name(device),
        "precision": f"amp {amp}" if amp else "float32",
        "compiled": compile,
        "first_call_seconds": {f: t["first_call_seconds"] for f, t in timings.items()},
        "versions": versions(),
        **rates,
    }


def _autocast(device: str, amp: str | None) -> Callable[[], Any]:
    """A factory of the AMP context for ``device`` (a no-op context without ``amp``)."""
    import contextlib

    import torch

    if amp is None:
        return contextlib.nullcontext
    dtype = getattr(torch, amp)
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return lambda: torch.autocast(device_type=kind, dtype=dtype)


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return device


def _pixels(batch: int, size: int) -> Any:
    """Random float32 pixels 0..255 as an NCHW view of NHWC memory (channels-last)."""
    import torch

    images = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype("float32")
    return torch.from_numpy(images).permute(0, 3, 1, 2)


def _freeze_all_but_top2(model: Any, backbone: str) -> list[Any]:
    """Freezes ``model`` except the top 2 blocks' and the head's non-BatchNorm parameters."""
    import torch

    model.eval()  # BatchNorm frozen: running statistics used and never updated
    for p in model.parameters():
        p.requires_grad_(False)
    modules = [model.get_submodule(n) for n in TOP2_MODULES[backbone]]
    trainable = []
    for module in [*modules, model.get_classifier()]:
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                continue
            for p in m.parameters(recurse=False):
                p.requires_grad_(True)
                trainable.append(p)
    return trainable


def peer_ratios(
    runs: dict[str, dict[str, Any]],
    forward: dict[str, Any],
    fine_tune: dict[str, Any],
    zoo_forward_mode: str | None = None,
    peak: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """zoo / timm ratios per backbone, where both sides were measured in this run.

    Args:
        runs: :func:`measure_timm_peer` results per backbone.
        forward: the run's ``forward`` section (zoo images/s per backbone and mode).
        fine_tune: the run's ``fine_tune`` section (zoo's training images/s per backbone,
            with the settings zoo chose; its precision is recorded beside the ratio).
        zoo_forward_mode: the zoo forward mode matching timm's precision; default
            ``float32``, or ``float32_xla`` where that is the plain mode (JAX).
        peak: the run's ``peak`` section; with it and the zoo row's GMACs, timm's forward
            gets ``forward_fraction_of_peak`` (2 x GMACs x images/s over the matmul peak
            of the same precision).

    Returns:
        Per backbone the timm result plus ``zoo_forward_mode``,
        ``zoo_forward_images_per_second``, ``forward_ratio``, ``zoo_train_images_per_second``,
        ``zoo_train_settings``, ``train_ratio`` and ``forward_fraction_of_peak`` (None where
        a side is missing).
    """
    out: dict[str, Any] = {}
    for name, timm in runs.items():
        row = forward.get(name) or {}
        mode = zoo_forward_mode or _plain_mode(row)
        zoo_forward = (row.get(mode) or {}).get("images_per_second")
        zoo_train = (fine_tune.get(name) or {}).get("zoo_images_per_second")
        timm_forward = timm.get("forward_images_per_second")
        timm_train = timm.get("train_step_images_per_second")
        out[name] = {
            **timm,
            "zoo_forward_mode": mode,
            "zoo_forward_images_per_second": zoo_forward,
            "forward_ratio": zoo_forward / timm_forward if zoo_forward and timm_forward else None,
            "zoo_train_images_per_second": zoo_train,
            "zoo_train_settings": (fine_tune.get(name) or {}).get("zoo_settings"),
            "train_ratio": zoo_train / timm_train if zoo_train and timm_train else None,
            "forward_fraction_of_peak": _fraction(row.get("gmacs"), timm_forward, mode, peak),
        }
    return out


def _plain_mode(row: dict[str, Any]) -> str:
    """zoo's float32 forward mode in ``row``: ``float32``, unless it was skipped (JAX)."""
    plain = row.get("float32") or {}
    return "float32_xla" if "skipped" in plain and "float32_xla" in row else "float32"


def _fraction(gmacs: Any, rate: Any, mode: str, peak: dict[str, Any] | None) -> float | None:
    gflops = peak_gflops(peak, mode)
    if not (gmacs and rate and gflops):
        return None
    return 2.0 * gmacs * rate / gflops


def measure_timm_head_stage(
    backbone: str,
    images: int = 256,
    epochs: int = 10,
    batch_size: int = 32,
    input_size: int | None = None,
) -> dict[str, Any]:
    """timm's head stage as its users write it: the wall time of a PyTorch training loop.

    The same images and labels as zoo's ``head_stage`` measurement
    (``benchmarks.train_bench._data``), channels-last; ``timm.create_model(...,
    num_classes=10)`` in eval mode (BatchNorm frozen), every parameter frozen but the
    classifier's (``model.get_classifier()``), Adam at zoo's learning rate, a
    ``DataLoader`` shuffling each epoch, and for each batch the full forward pass (the
    frozen backbone runs every epoch: timm has no feature cache), the loss, backward and
    step. Pixels are scaled to -1..1 in the loop, as a timm transform would.

    Returns:
        ``seconds`` (the whole loop, model creation excluded), ``epoch_seconds``,
        ``backbone``, ``timm_model``, ``images``, ``epochs``, ``batch_size``,
        ``input_size``; without timm, ``{"skipped": SKIP_NEEDS_PEER, "seconds": None}``.
    """
    if not has_timm():
        return {"skipped": SKIP_NEEDS_PEER, "seconds": None}
    import time

    import torch

    from benchmarks.train_bench import LEARNING_RATE, NUM_CLASSES, _data

    x, y = _data(backbone, images, input_size)
    pixels = torch.from_numpy(x).permute(0, 3, 1, 2)  # NCHW view of NHWC: channels-last
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(pixels, torch.from_numpy(y)),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    model = timm_model(backbone, NUM_CLASSES)  # eval mode, channels-last
    for p in model.parameters():
        p.requires_grad_(False)
    head = list(model.get_classifier().parameters())
    for p in head:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(head, lr=LEARNING_RATE)
    epoch_seconds = []
    start = time.perf_counter()
    for _ in range(epochs):
        t0 = time.perf_counter()
        for images_batch, labels in loader:
            logits = model(images_batch / 127.5 - 1.0)
            loss = torch.nn.functional.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        epoch_seconds.append(time.perf_counter() - t0)
    return {
        "backbone": backbone,
        "timm_model": TIMM_NAMES[backbone],
        "images": images,
        "epochs": epochs,
        "batch_size": batch_size,
        "input_size": list(x.shape[1:3]),
        "seconds": time.perf_counter() - start,
        "epoch_seconds": epoch_seconds,
        "versions": versions(),
    }
