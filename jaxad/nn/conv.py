"""Stride-1 2-D convolution with exact pruning of all-padding kernel taps.

:func:`conv2d` computes the same function as ``jax.lax.conv_general_dilated`` (NHWC input,
HWIO kernel, stride 1, explicit zero padding, kernel dilation). Kernel taps whose input
positions lie in the zero padding for *every* output pixel contribute exact zeros; they
are cut from the kernel, and the padding shrunk to match, before the convolution. This
matters for dilated convolutions on small maps: RAMFAE's rate-9 ASPP branch on the 8x8
bottleneck (64 px input) becomes a 1x1 convolution (9x fewer multiply-adds forward, for
the input gradient and for the kernel gradient). The cut taps get an exactly zero
gradient, as in the plain convolution; the parameters keep their full shape.

Backend independent (a static shape computation plus a kernel slice); outputs equal
the plain convolution up to float32 summation order (``tests/nn/test_conv.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["conv2d", "prune_taps", "Conv2D"]

_DN = ("NHWC", "HWIO", "NHWC")

Padding = tuple[tuple[int, int], tuple[int, int]]


def _as_padding(padding: int | Sequence[Sequence[int]]) -> Padding:
  if isinstance(padding, int):
    return ((padding, padding), (padding, padding))
  (a, b), (c, d) = padding
  return ((int(a), int(b)), (int(c), int(d)))


def _live_taps(size: int, k: int, lo: int, hi: int, d: int) -> tuple[int, int]:
  """Range ``[t0, t1)`` of the taps of one spatial dim that touch the unpadded input."""
  out = size + lo + hi - d * (k - 1)
  live = [t for t in range(k) if t * d - lo + out - 1 >= 0 and t * d - lo < size]
  if not live:  # the output sees only padding; keep one tap so that shapes stay valid
    return 0, 1
  return live[0], live[-1] + 1


def prune_taps(x_shape: Sequence[int], kernel_shape: Sequence[int], padding: Padding,
               dilation: int) -> tuple[tuple[slice, slice], Padding]:
  """Kernel slices and padding of the equivalent convolution without all-padding taps.

  Args:
    x_shape: input shape ``[B, H, W, C_in]``.
    kernel_shape: ``[kh, kw, C_in, C_out]``.
    padding: ``((top, bottom), (left, right))`` zero padding.
    dilation: kernel dilation.
  Returns:
    ``(slices, padding')``: ``kernel[slices]`` with ``padding'`` (entries may be negative,
    meaning a crop) gives the same output shape and values.
  """
  slices, pads = [], []
  for size, k, (lo, hi) in zip(x_shape[1:3], kernel_shape[:2], padding):
    t0, t1 = _live_taps(size, k, lo, hi, dilation)
    out = size + lo + hi - dilation * (k - 1)
    lo2 = lo - t0 * dilation
    hi2 = out - size - lo2 + dilation * (t1 - t0 - 1)
    slices.append(slice(t0, t1))
    pads.append((lo2, hi2))
  return (slices[0], slices[1]), (pads[0], pads[1])


def conv2d(x: jax.Array, kernel: jax.Array, padding: int | Sequence[Sequence[int]] = 0,
           dilation: int = 1, *, precision: jax.lax.Precision | None = None) -> jax.Array:
  """Stride-1 convolution, the function of PyTorch ``Conv2d(padding, dilation, bias=False)``.

  Args:
    x: ``[B, H, W, C_in]``.
    kernel: ``[kh, kw, C_in, C_out]`` (HWIO; PyTorch ``weight.permute(2, 3, 1, 0)``).
    padding: symmetric zero padding (int) or ``((top, bottom), (left, right))``.
    dilation: kernel dilation.
    precision: passed to the convolution (``None`` = backend default).
  Returns:
    ``[B, H + top + bottom - dilation (kh - 1), W + left + right - dilation (kw - 1), C_out]``.
  """
  if x.ndim != 4 or kernel.ndim != 4 or kernel.shape[2] != x.shape[3]:
    raise ValueError(f"conv2d needs x [B, H, W, C] and kernel [kh, kw, C, C_out] with the same C, "
                     f"got {x.shape} and {kernel.shape}")
  d = int(dilation)
  (sy, sx), pad = prune_taps(x.shape, kernel.shape, _as_padding(padding), d)
  kernel = kernel[sy, sx]
  if min(pad[0] + pad[1]) < 0:  # a crop: slice first, XLA convolutions want padding >= 0
    x = jax.lax.pad(x, jnp.zeros((), x.dtype),
                    ((0, 0, 0), (min(pad[0][0], 0), min(pad[0][1], 0), 0),
                     (min(pad[1][0], 0), min(pad[1][1], 0), 0), (0, 0, 0)))
    pad = tuple((max(lo, 0), max(hi, 0)) for lo, hi in pad)
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), pad, rhs_dilation=(d, d),
                                      dimension_numbers=_DN, precision=precision)


class Conv2D(nn.Module):
  """A stride-1 ``nn.Conv`` replacement computed by :func:`conv2d` (tap pruning).

  Same parameters as ``flax.linen.Conv`` (``kernel [k, k, C_in, features]`` with LeCun-normal
  init, optional zero-initialised ``bias``), so checkpoints are interchangeable.

  Attributes:
    features: output channels.
    kernel_size: square kernel side.
    padding: symmetric zero padding (int) or ``((top, bottom), (left, right))``.
    dilation: kernel dilation.
    use_bias: add a bias.
  """
  features: int
  kernel_size: int = 3
  padding: int | tuple[tuple[int, int], tuple[int, int]] = 0
  dilation: int = 1
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, x.shape[-1], self.features),
                        jnp.float32)
    y = conv2d(x, kernel, self.padding, self.dilation)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    return y
