"""Test-wide settings: JAX's persistent compilation cache, as run.py enables it.

Many tests build the same small models and steps (the smoke configs, in-process and in run.py subprocesses); with
the cache each program is compiled once per machine instead of once per test, which keeps the suite within its time
budget. The cache lives under ${GAN_JAX_CACHE:-~/.cache/gan_jax}/xla, which CI gives a fresh directory.
"""

from gan_jax.env import enable_compilation_cache

enable_compilation_cache()
