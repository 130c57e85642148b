"""Model registry: a name in `config.model.name` -> a build function returning (generator, discriminator).

A build function takes the per-example data shape and keyword arguments; the keyword arguments are exactly the
model-specific fields of `config.model`, so a misspelt field is reported by name before any network is built.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import flax.linen as nn
import ml_collections

from gan_jax.models import biggan, dcgan, mlp, sngan, stylegan2

MODELS: dict[str, Callable[..., tuple[nn.Module, nn.Module]]] = {
    "mlp": mlp.build,
    "dcgan": dcgan.build,
    "stylegan2": stylegan2.build,
    "sngan": sngan.build,
    "biggan": biggan.build,
}
# Fields of config.model that belong to the trainer, not to the build function.
_TRAINER_FIELDS = ("name", "z_dim", "z_dist")


def build_networks(model_config: ml_collections.ConfigDict, data_shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    """(generator, discriminator) for `model_config.name`, with the config's model fields as arguments."""
    from gan_jax.config import ConfigError

    name = model_config.name
    if name not in MODELS:
        raise ConfigError(f"config.model.name={name!r}: unknown model; choose one of {', '.join(MODELS)}")
    build = MODELS[name]
    accepted = set(inspect.signature(build).parameters) - {"data_shape"}
    kwargs = {k: v for k, v in model_config.items() if k not in _TRAINER_FIELDS}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ConfigError(
            f"config.model.{unknown[0]}: not a field of model {name!r}; its fields are {', '.join(sorted(accepted))}"
        )
    try:
        return build(tuple(data_shape), **kwargs)
    except ValueError as e:
        raise ConfigError(f"config.model ({name}) does not fit data of shape {tuple(data_shape)}: {e}") from e
