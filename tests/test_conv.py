"""conv2d: the CPU form's values and derivatives are the plain convolution's, in every mode of
differentiation, and forward-mode derivatives work through the UNet and the ADP."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import TINY_UNET

from dg_jax.models import conv
from dg_jax.models.adp import ADP, ADPConfig
from dg_jax.models.unet import UNet

CASES = [(3, 1, 1, 8), (3, 2, 1, 8), (3, 2, 0, 9), (3, 2, 1, 7), (1, 1, 0, 5), (4, 2, 1, 8)]


def close(a, b, atol=1e-5):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=atol)


@pytest.fixture(params=[False, True], ids=["kernel-gradient-as-conv", "kernel-gradient-by-taps"])
def kernel_form(request, monkeypatch):
    # both forms run somewhere (the tested jaxlib picks one, a newer one the other)
    monkeypatch.setattr(conv, "KERNEL_GRADIENT_BY_TAPS", request.param)


@pytest.mark.parametrize("size,stride,pad,height", CASES)
def test_cpu_form_has_the_plain_convolutions_derivatives(size, stride, pad, height, kernel_form):
    # every stride, padding and leftover row; reverse mode, forward mode, linearize, and a
    # Hessian-vector product (forward over reverse)
    def plain(x, k):
        return jax.lax.conv_general_dilated(x, k, (stride, stride), ((pad, pad), (pad, pad)),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def ours(x, k):
        return conv._cpu_conv2d(x, k, stride, pad)

    x = jax.random.normal(jax.random.key(0), (2, height, height + 1, 3))
    k = jax.random.normal(jax.random.key(1), (size, size, 3, 5))
    tangents = (jax.random.normal(jax.random.key(3), x.shape),
                jax.random.normal(jax.random.key(4), k.shape))
    dy = jax.random.normal(jax.random.key(2), plain(x, k).shape)
    close(ours(x, k), plain(x, k))
    for a, b in zip(jax.vjp(ours, x, k)[1](dy), jax.vjp(plain, x, k)[1](dy)):
        close(a, b)
    close(jax.jvp(ours, (x, k), tangents)[1], jax.jvp(plain, (x, k), tangents)[1])
    close(jax.linearize(ours, x, k)[1](*tangents), jax.jvp(plain, (x, k), tangents)[1])
    for a, b in zip(*(jax.jvp(jax.grad(lambda x, k, f=f: jnp.sum(jnp.sin(f(x, k))), (0, 1)),
                              (x, k), tangents)[1] for f in (ours, plain))):
        # second order: float32 rounding of the two derivations reaches ~2e-5 where XLA sums
        # in another order (the suite compiles at -O0); a wrong formula is off by O(1)
        close(a, b, atol=3e-5)
    # the x-only gradient a guided step takes, also under jit and vmap
    grad_x = jax.jit(jax.vmap(jax.grad(lambda x: jnp.sum(ours(x[None], k) ** 2))))
    close(grad_x(x), jax.vmap(jax.grad(lambda x: jnp.sum(plain(x[None], k) ** 2)))(x))


@pytest.fixture(params=["cpu-form", "plain"])
def conv_form(request, monkeypatch):
    # "plain" is what GPU and TPU run: lax.conv_general_dilated
    if request.param == "plain":
        monkeypatch.setattr(conv, "cpu_form", lambda: False)
    return request.param


def test_forward_mode_through_the_unet_and_the_adp(conv_form):
    unet = UNet(TINY_UNET, rngs=nnx.Rngs(0))
    adp = ADP(ADPConfig(attributes=(("hair", 2), ("skin", 3)), h_shape=TINY_UNET.h_shape),
              rngs=nnx.Rngs(1))
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    t = jnp.array([10, 900])
    v = jax.random.normal(jax.random.key(2), x.shape)

    def f(x):
        out = unet(x, t)
        logits = adp(unet.encode(x, t).h, t, 0)
        return out, logits["skin"]

    (out, logits), (d_out, d_logits) = jax.jit(lambda x, v: jax.jvp(f, (x,), (v,)))(x, v)
    lin_out, lin_logits = jax.jit(lambda x, v: jax.linearize(f, x)[1](v))(x, v)
    close(lin_out, d_out)
    close(lin_logits, d_logits)
    # the tangent is the derivative: a central difference agrees
    eps = 1e-3
    (hi, hi_l), (lo, lo_l) = jax.jit(f)(x + eps * v), jax.jit(f)(x - eps * v)
    np.testing.assert_allclose((hi - lo) / (2 * eps), d_out, rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose((hi_l - lo_l) / (2 * eps), d_logits, rtol=2e-2, atol=2e-2)
