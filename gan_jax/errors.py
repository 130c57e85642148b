"""The errors that mean "the input is wrong", reported to the user as one clear message instead of a traceback."""

from gan_jax.config import ConfigError
from gan_jax.data import DatasetNotFoundError
from gan_jax.train.checkpoint import CheckpointError
from gan_jax.train.loop import NonFiniteError

USER_ERRORS = (ConfigError, DatasetNotFoundError, CheckpointError, NonFiniteError)
