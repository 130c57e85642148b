"""Process-level settings that must be made before JAX initializes its backends."""

from __future__ import annotations

import logging
import os

# XLA:CPU runs DCGAN's convolutions ~27% faster per train step when YNNPACK does not take each convolution
# individually (benchmarks/step_speed.py: 1.14 -> 1.46 steps/s). It slows 7x7 convolutions with 3 channels
# (benchmarks/conv_speed.py), so models built on those (CycleGAN) should revisit this choice.
CPU_XLA_FLAGS = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


def compilation_cache_dir() -> str:
    """Where compiled XLA programs are kept between processes: ${GAN_JAX_CACHE:-~/.cache/gan_jax}/xla."""
    root = os.environ.get("GAN_JAX_CACHE") or os.path.join("~", ".cache", "gan_jax")
    return os.path.join(os.path.expanduser(root), "xla")


def enable_compilation_cache() -> None:
    """Turns on JAX's persistent compilation cache (unless the user configured it), through the environment so that
    it holds for every later import of JAX. A resumed or repeated run then loads its compiled steps instead of
    compiling them again: StyleGAN2's three step variants take about 100 s to compile on 2 CPU cores. Programs that
    compile in under a second are not stored."""
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", compilation_cache_dir())


def configure_xla() -> None:
    """Adds gan_jax's CPU XLA flags unless the user set XLA_FLAGS, or JAX_PLATFORMS names only accelerators, and
    enables the persistent compilation cache."""
    enable_compilation_cache()
    if "XLA_FLAGS" in os.environ or not CPU_XLA_FLAGS:
        return
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms and "cpu" not in platforms:
        return
    os.environ["XLA_FLAGS"] = CPU_XLA_FLAGS


class _DropLibraryChatter(logging.Filter):
    """Drops INFO records from Orbax (dozens of lines per save) so the console shows training progress."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "/orbax/" not in record.pathname


def quiet_library_logs() -> None:
    absl_logger = logging.getLogger("absl")
    if not any(isinstance(f, _DropLibraryChatter) for f in absl_logger.filters):
        absl_logger.addFilter(_DropLibraryChatter())
