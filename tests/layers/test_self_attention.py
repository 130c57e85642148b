"""SelfAttention is the identity at init (gamma = 0) and, with gamma = 1, matches a numpy transcription of
BigGAN-PyTorch's `Attention.forward` (NCHW there, NHWC here)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax.layers import SelfAttention


def numpy_sn(w: np.ndarray, u: np.ndarray) -> np.ndarray:
    """One power-iteration step from u, then w / sigma."""
    mat = w.reshape(-1, w.shape[-1]).astype(np.float64)
    v = mat @ u
    v /= np.linalg.norm(v)
    u = mat.T @ v
    u /= np.linalg.norm(u)
    return w / (v @ mat @ u)


def reference(x: np.ndarray, kernels: dict[str, np.ndarray], gamma: float) -> np.ndarray:
    """BigGAN-PyTorch's Attention on x.permute(0, 3, 1, 2), 1x1 convs as channel matmuls, permuted back to NHWC."""
    x = x.astype(np.float64).transpose(0, 3, 1, 2)  # NCHW
    n, c, h, w = x.shape

    def conv1x1(t, name):  # (N, Cin, H, W) -> (N, Cout, H, W)
        return np.einsum("nchw,co->nohw", t, kernels[name][0, 0])

    def max_pool(t):
        return t.reshape(t.shape[0], t.shape[1], h // 2, 2, w // 2, 2).max(axis=(3, 5))

    theta = conv1x1(x, "theta").reshape(n, c // 8, h * w)
    phi = max_pool(conv1x1(x, "phi")).reshape(n, c // 8, h * w // 4)
    g = max_pool(conv1x1(x, "g")).reshape(n, c // 2, h * w // 4)
    logits = np.einsum("ncq,nck->nqk", theta, phi)  # bmm(theta^T, phi)
    beta = np.exp(logits - logits.max(-1, keepdims=True))
    beta /= beta.sum(-1, keepdims=True)
    o = conv1x1(np.einsum("nck,nqk->ncq", g, beta).reshape(n, c // 2, h, w), "o")  # bmm(g, beta^T)
    return (gamma * o + x).transpose(0, 2, 3, 1)


@pytest.mark.parametrize("spectral", [False, True])
def test_attention_identity_at_init_and_matches_reference(spectral):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 4, 6, 16)), jnp.float32)
    layer = SelfAttention(spectral=spectral)
    variables = layer.init(jax.random.PRNGKey(0), x, train=False)
    params = variables["params"]
    assert jax.tree.map(jnp.shape, dict(params)) == {
        "theta": {"kernel": (1, 1, 16, 2)},
        "phi": {"kernel": (1, 1, 16, 2)},
        "g": {"kernel": (1, 1, 16, 8)},
        "o": {"kernel": (1, 1, 8, 16)},
        "gamma": (),
    }
    assert set(variables) == ({"params", "spectral"} if spectral else {"params"})
    np.testing.assert_array_equal(np.asarray(layer.apply(variables, x, train=False)), np.asarray(x))

    # Larger kernels so the attention is far from uniform, and gamma = 1.
    params = jax.tree.map(lambda a: a * 3.0, dict(params))
    params["gamma"] = jnp.ones(())
    out, updates = layer.apply({**variables, "params": params}, x, train=True, mutable=["spectral"])
    kernels = {k: np.asarray(params[k]["kernel"], np.float64) for k in ("theta", "phi", "g", "o")}
    if spectral:
        kernels = {k: numpy_sn(w, np.asarray(variables["spectral"][f"{k}_sn"]["u"])) for k, w in kernels.items()}
        assert set(updates["spectral"]) == {"theta_sn", "phi_sn", "g_sn", "o_sn"}
    np.testing.assert_allclose(np.asarray(out), reference(np.asarray(x), kernels, 1.0), rtol=1e-4, atol=1e-5)
