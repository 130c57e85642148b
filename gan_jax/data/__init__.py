"""Offline datasets for GAN training: deterministic, resumable batches by step.

    ds = get_dataset(config.data, seed=config.seed)
    batch = ds.batch(step, batch_size)              # {'x': float32, 'label': int32}, pure in (seed, step)
    for batch in ds.iterate(start_step, batch_size): ...

See `pipeline.py` for the batching contract, `sources.py` for where each dataset comes from, and `mixtures.py` for
the 2-D benchmarks.
"""

from gan_jax.data.base import ArraySource, DatasetNotFoundError, ImageOptions, Source
from gan_jax.data.mixtures import mixture_params, sample_mixture
from gan_jax.data.pipeline import (
    BatchIterator,
    Dataset,
    epoch_permutation,
    get_dataset,
    parse_config,
    process_rows,
)
from gan_jax.data.sources import LoadRequest, builtin_names, register

__all__ = [
    "ArraySource",
    "BatchIterator",
    "Dataset",
    "DatasetNotFoundError",
    "ImageOptions",
    "LoadRequest",
    "Source",
    "builtin_names",
    "epoch_permutation",
    "get_dataset",
    "mixture_params",
    "parse_config",
    "process_rows",
    "register",
    "sample_mixture",
]
