"""The 2-D convolution every model here uses, with derivatives that XLA's CPU backend runs fast.

On GPU and TPU `conv2d` is `lax.conv_general_dilated`. On CPU it is a `jax.custom_jvp` whose
tangent map is written so that JAX's transposes of it (reverse mode) take the forms XLA:CPU runs
fast (bench/conv_backward.py, docs/ENVIRONMENT.md):
- the input gradient is a convolution with the flipped kernel laid out HWIO; JAX's own rule swaps
  the kernel's I/O dimensions instead, which XLA:CPU runs ~3x slower inside a lax.scan or
  lax.cond (a guided sampling loop);
- from jaxlib 0.9.1 on, XLA:CPU runs the kernel gradient as a convolution ~30x slower than before;
  there it is one matrix product per kernel tap instead (~5x faster than the convolution, ~4x
  slower than 0.9.0.1's convolution, so older jaxlibs keep that).
Being a custom_jvp built from ordinary operations, it supports every transformation: jax.grad,
jax.jvp, jax.linearize, vmap, and higher derivatives.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import jaxlib
from jax.custom_derivatives import SymbolicZero

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")
# XLA:CPU's kernel-gradient convolution became slow in jaxlib 0.9.1 (docs/ENVIRONMENT.md)
KERNEL_GRADIENT_BY_TAPS = tuple(int(p) for p in jaxlib.__version__.split(".")[:3]) >= (0, 9, 1)


def _convolve(x, kernel, stride: int, padding, lhs_dilation: int = 1):
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), padding,
                                        lhs_dilation=(lhs_dilation, lhs_dilation),
                                        dimension_numbers=_DIMENSIONS)


def _symmetric(pad: int):
    return ((pad, pad), (pad, pad))


def conv2d(x: jax.Array, kernel: jax.Array, stride: int, pad: int) -> jax.Array:
    """x: [B, H, W, Cin], kernel: [k, k, Cin, Cout] -> [B, H', W', Cout], symmetric padding
    `pad` (PyTorch's, so converted weights match)."""
    if cpu_form():
        return _cpu_conv2d(x, kernel, stride, pad)
    return _convolve(x, kernel, stride, _symmetric(pad))


def cpu_form() -> bool:
    """Whether conv2d traces into its CPU form (decided when a function is traced)."""
    return jax.default_backend() == "cpu"


def input_gradient(dy: jax.Array, kernel: jax.Array, x_shape, stride: int, pad: int):
    """dy [B, H', W', Cout] -> dx [B, H, W, Cin]: dy, dilated by the stride, correlated with the
    flipped kernel; the far side gets the rows the forward stride skipped."""
    size = kernel.shape[0]
    padding = [(size - 1 - pad, size - 1 - pad + (n + 2 * pad - size) % stride)
               for n in x_shape[1:3]]
    flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)
    return _convolve(dy, flipped.astype(dy.dtype), 1, padding, lhs_dilation=stride)


def kernel_taps(x: jax.Array, size: int, stride: int, pad: int, out_hw) -> list:
    """The size x size views of padded x that each kernel tap (i, j) multiplies: [i][j] ->
    [B, H', W', Cin]."""
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    h, w = out_hw
    return [[padded[:, i:i + (h - 1) * stride + 1:stride, j:j + (w - 1) * stride + 1:stride]
             for j in range(size)] for i in range(size)]


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _cpu_conv2d(x, kernel, stride, pad):
    return _convolve(x, kernel, stride, _symmetric(pad))


def _along_input(dx, x, kernel, y, stride, pad):
    """The tangent map in x, written as the transpose of `input_gradient` so that reverse mode
    transposes it back into exactly that form."""
    # y itself, not a ShapeDtypeStruct, carries its type under shard_map (varying axes) too
    along = jax.linear_transpose(lambda dy: input_gradient(dy, kernel, x.shape, stride, pad), y)
    return along(dx)[0]


def _along_kernel(dkernel, x, stride, pad, out_hw):
    if KERNEL_GRADIENT_BY_TAPS:  # transposes into one matrix product per tap
        taps = kernel_taps(x, dkernel.shape[0], stride, pad, out_hw)
        return sum(jnp.einsum("bhwc,co->bhwo", tap, dkernel[i, j])
                   for i, row in enumerate(taps) for j, tap in enumerate(row))
    return _convolve(x, dkernel, stride, _symmetric(pad))


def _cpu_conv2d_jvp(stride, pad, primals, tangents):
    x, kernel = primals
    dx, dkernel = tangents
    y = _cpu_conv2d(x, kernel, stride, pad)
    # Symbolic zeros: a guided step differentiates w.r.t. x only, and must not compute the
    # kernel's part (nor training the input's part).
    terms = []
    if not isinstance(dx, SymbolicZero):
        terms.append(_along_input(dx, x, kernel, y, stride, pad))
    if not isinstance(dkernel, SymbolicZero):
        terms.append(_along_kernel(dkernel, x, stride, pad, y.shape[1:3]))
    return y, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(y)


_cpu_conv2d.defjvp(_cpu_conv2d_jvp, symbolic_zeros=True)
