"""Frozen-prefix activation caching: one mechanism for any cut at a block boundary.

A fine-tuning stage that leaves the bottom of the backbone frozen trains only the top, on
activations of the frozen prefix computed once. The package, in the order a stage uses it:

* :mod:`zoo.caching.plan`: where a classifier can be cut (blocks, :func:`plan_cut`) and
  the model surgery (:func:`split_model` into prefix and suffix, :func:`middle_model`);
* :mod:`zoo.caching.compute`: the prefix run once over the data
  (:func:`compute_activations`, :func:`derive_activations`), on the inference engine
  :mod:`zoo.caching.engine` probes (:func:`choose_engine`: TensorFlow as built, with its
  BatchNorms folded into the convolutions, :mod:`zoo.caching.fold`, or LiteRT);
* :mod:`zoo.caching.store`: where activations live (memory, or a memmap on disk past a
  byte budget), their keys, atomic writes;
* :mod:`zoo.caching.dataset`: cached (or plain) data for ``fit`` (tf.data on TensorFlow,
  a ``keras.utils.PyDataset`` elsewhere);
* :mod:`zoo.caching.provider`: :class:`ActivationProvider`, which decides for each stage
  of ``zoo.fine_tune`` what to fit and on which data, and records its :class:`CacheInfo`.
"""

from zoo.caching.compute import compute_activations, derive_activations
from zoo.caching.dataset import (
    CachedData,
    PlainData,
    TrainIterations,
    cached_dataset,
    epoch_permutation,
)
from zoo.caching.engine import ENGINES, EngineCandidate, EngineChoice, choose_engine
from zoo.caching.fold import fold_batchnorm
from zoo.caching.plan import (
    CacheUnavailable,
    CutPlan,
    SplitModel,
    all_layers,
    apply_policy,
    backbone_blocks,
    frozen_layers_in_inference,
    layers_to_probe,
    middle_model,
    plan_cut,
    probe_prefix,
    split_model,
)
from zoo.caching.provider import (
    SHARED_CACHE_DIR,
    ActivationProvider,
    CacheInfo,
    CacheOptions,
    StageInput,
    plan_cuts,
)
from zoo.caching.store import (
    CACHE_DTYPES,
    DEFAULT_CACHE_BUDGET_BYTES,
    Activations,
    default_disk_dir,
    example_keys,
    load_activations,
    prefix_key,
    remove_dir,
    save_activations,
)

__all__ = [
    "CACHE_DTYPES",
    "DEFAULT_CACHE_BUDGET_BYTES",
    "SHARED_CACHE_DIR",
    "ActivationProvider",
    "Activations",
    "CacheInfo",
    "CacheOptions",
    "CacheUnavailable",
    "CachedData",
    "CutPlan",
    "PlainData",
    "SplitModel",
    "StageInput",
    "TrainIterations",
    "all_layers",
    "apply_policy",
    "backbone_blocks",
    "cached_dataset",
    "compute_activations",
    "default_disk_dir",
    "derive_activations",
    "epoch_permutation",
    "example_keys",
    "fold_batchnorm",
    "choose_engine",
    "EngineChoice",
    "EngineCandidate",
    "ENGINES",
    "frozen_layers_in_inference",
    "layers_to_probe",
    "load_activations",
    "middle_model",
    "plan_cut",
    "plan_cuts",
    "prefix_key",
    "probe_prefix",
    "remove_dir",
    "save_activations",
    "split_model",
]
