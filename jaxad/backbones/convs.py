"""Convolutions of the mobile backbones with ``nn.Conv``'s parameters, in forms fast on XLA:CPU.

MobileNetV2 and EfficientNet-Lite are made of three kinds of convolution; XLA:CPU runs two of
them, and the gradients of all three, far slower than PyTorch (16 images at 224 px). Each has
two computations of the same function with the same parameters (``kernel`` in ``nn.Conv``'s
HWIO layout, so checkpoints and ``torch_weights`` are unchanged):

* **depthwise** ``k x k`` (``feature_group_count=C``, ``kernel [k, k, 1, C]``):
  ``y[b, i, j, c] = sum_{dy, dx} xp[b, s i + dy, s j + dx, c] kernel[dy, dx, 0, c]`` with ``xp``
  the zero-padded input. ``"native"``: the grouped convolution, which XLA:CPU lowers to a
  generic loop (16 x 56 x 56 x 144, 3x3: ~250 ms forward, ~1 s with gradients; PyTorch 40 /
  54 ms). ``"unrolled"``: the sum over the taps of strided slices of ``xp`` times one kernel
  row, one fused elementwise loop; a custom VJP computes the input gradient the same way (the
  stride-dilated, padded output gradient against the flipped kernel) and the kernel gradient
  per tap as an elementwise sum over batch groups followed by one reduction.
* **pointwise** 1x1 (``kernel [1, 1, C_in, C_out]``): ``"unrolled"`` is the matrix product
  ``x[B H W, C_in] @ kernel[C_in, C_out]``; its kernel gradient is a matrix product too, where
  the convolution's needs transposes of both operands to ``[C, H, W, B]``.
* **dense** ``k x k`` with few input channels (the 3-channel stems): ``"unrolled"`` gathers the
  ``k * k * C_in`` patch values (im2col, cheap for ``C_in = 3``) and multiplies by the kernel
  as a ``[k k C_in, C_out]`` matrix.
* When the contraction is short (1x1 from <= 16 channels, stems with ``k * k * C_in <= 32``) the
  forward pass is instead one fused loop of broadcast products over the inputs (XLA:CPU's
  matrix product is slow there); the gradients of those are still the matrix products.

``"auto"`` picks per backend (:func:`default_conv_method`): ``"unrolled"`` on CPU (measured in
``experiments/benchmark_backbones.py``), ``"native"`` on GPU/TPU, whose convolution kernels
cover all three (not measured here), like ``jaxad.nn.default_upsample``. Outputs agree with
``"native"`` up to float32 summation order (``tests/backbones/test_convs.py``: values and
gradients, random and ImageNet weights).

References:
  Howard et al., "MobileNets", 2017 (depthwise separable convolutions);
  Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["CONV_METHODS", "default_conv_method", "resolve_conv_method", "explicit_pads",
           "depthwise_conv", "pointwise_conv", "dense_conv", "DepthwiseConv", "PointwiseConv",
           "DenseConv"]

CONV_METHODS = ("native", "unrolled")
_DEFAULT = {"cpu": "unrolled"}
_DN = ("NHWC", "HWIO", "NHWC")

Pads = tuple[tuple[int, int], tuple[int, int]]
Padding = str | Sequence[Sequence[int]]


def default_conv_method(backend: str | None = None) -> str:
  """The convolution path chosen for a JAX backend.

  Args:
    backend: ``"cpu"``, ``"gpu"``, ``"tpu"``...; ``None`` means ``jax.default_backend()``.
  Returns:
    ``"unrolled"`` on CPU (measured faster), ``"native"`` elsewhere.
  """
  backend = jax.default_backend() if backend is None else backend
  return _DEFAULT.get(backend, "native")


def resolve_conv_method(method: str) -> str:
  """Maps ``"auto"`` to :func:`default_conv_method` and validates the name."""
  if method == "auto":
    return default_conv_method()
  if method not in CONV_METHODS:
    raise ValueError(f"conv_method: expected 'auto' or one of {CONV_METHODS}, got {method!r}")
  return method


def explicit_pads(x_shape: Sequence[int], kernel_size: int, stride: int,
                  padding: Padding) -> Pads:
  """``((top, bottom), (left, right))`` zero padding exactly as ``nn.Conv`` computes it.

  Args:
    x_shape: ``[B, H, W, C]``.
    kernel_size, stride: square kernel side and stride.
    padding: ``"SAME"`` (TF: the extra row/column at the bottom/right), ``"VALID"`` or pairs.
  """
  if isinstance(padding, str):
    pads = lax.padtype_to_pads(tuple(x_shape[1:3]), (kernel_size, kernel_size),
                               (stride, stride), padding)
    return tuple((int(a), int(b)) for a, b in pads)
  (a, b), (c, d) = padding
  return ((int(a), int(b)), (int(c), int(d)))


def _pad(x: jax.Array, pads: Pads, interior: int = 0) -> jax.Array:
  (t, b), (l, r) = pads
  return lax.pad(x, jnp.zeros((), x.dtype),
                 ((0, 0, 0), (t, b, interior), (l, r, interior), (0, 0, 0)))


def _out_size(n: int, lo: int, hi: int, k: int, s: int) -> int:
  return (n + lo + hi - k) // s + 1


def _tap(xp: jax.Array, dy: int, dx: int, s: int, ho: int, wo: int) -> jax.Array:
  """``xp[:, dy + s i, dx + s j, :]`` for ``i < ho``, ``j < wo``."""
  return lax.slice(xp, (0, dy, dx, 0),
                   (xp.shape[0], dy + s * (ho - 1) + 1, dx + s * (wo - 1) + 1, xp.shape[3]),
                   (1, s, s, 1))


def _shifted_sum(xp: jax.Array, kernel: jax.Array, s: int, ho: int, wo: int) -> jax.Array:
  """``sum_{dy, dx} xp[:, dy + s i, dx + s j] * kernel[dy, dx, 0]`` (one fused loop in XLA)."""
  k = kernel.shape[0]
  y = None
  for dy in range(k):
    for dx in range(k):
      term = _tap(xp, dy, dx, s, ho, wo) * kernel[dy, dx, 0]
      y = term if y is None else y + term
  return y


def _batch_groups(b: int, limit: int = 4) -> int:
  """Images summed elementwise per tap in the kernel gradient: consecutive groups of this size.

  The largest divisor of the per-device batch (``b / device_count`` when divisible, so that a
  batch-sharded group never spans two devices) that is at most ``limit``.
  """
  devices = jax.device_count()
  local = b // devices if b % devices == 0 else 1
  return max(d for d in range(1, min(local, limit) + 1) if local % d == 0)


def _depthwise_fwd(x, kernel, stride, pads):
  (t, b), (l, r) = pads
  k = kernel.shape[0]
  xp = _pad(x, pads)
  y = _shifted_sum(xp, kernel, stride, _out_size(x.shape[1], t, b, k, stride),
                   _out_size(x.shape[2], l, r, k, stride))
  return y, (xp, kernel)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _depthwise_unrolled(x: jax.Array, kernel: jax.Array, stride: int, pads: Pads) -> jax.Array:
  return _depthwise_fwd(x, kernel, stride, pads)[0]


def _depthwise_bwd(stride, pads, res, g):
  xp, kernel = res
  k, s = kernel.shape[0], stride
  (t, bo), (l, r) = pads
  n, hp, wp, c = xp.shape
  h, w = hp - t - bo, wp - l - r
  ho, wo = g.shape[1:3]
  # Input gradient: g scattered through the taps = the stride-dilated g, padded by k - 1,
  # correlated with the flipped kernel and cropped to the unpadded input.
  gp = _pad(g, ((k - 1 - t, h + t - s * (ho - 1) - 1), (k - 1 - l, w + l - s * (wo - 1) - 1)),
            s - 1)
  dx = _shifted_sum(gp, kernel[::-1, ::-1], 1, h, w)
  # Kernel gradient: per tap an elementwise sum over batch groups (a fused loop that reads
  # its slices in place), then one reduction of all taps over the [B / G, Ho, Wo] positions
  # (reducing each tap separately lets XLA fuse the sum into a reduction loop, ~10x slower).
  groups = _batch_groups(n)
  x_groups = [xp.reshape(n // groups, groups, hp, wp, c)[:, i] for i in range(groups)]
  g_groups = [g.reshape(n // groups, groups, ho, wo, c)[:, i] for i in range(groups)]
  taps = []
  for dy in range(k):
    for dx_ in range(k):
      acc = None
      for xi, gi in zip(x_groups, g_groups):
        term = _tap(xi, dy, dx_, s, ho, wo) * gi
        acc = term if acc is None else acc + term
      taps.append(acc)
  dk = jnp.sum(jnp.stack(taps, axis=3), axis=(0, 1, 2)).reshape(k, k, 1, c)
  return dx, dk.astype(kernel.dtype)


_depthwise_unrolled.defvjp(_depthwise_fwd, _depthwise_bwd)


# Matrix products with a short contraction (a 1x1 conv from <= 16 channels, the 3x3 stems from
# 3 channels: 27) are slow in XLA:CPU's GEMM; a sum of broadcast products over the inputs, one
# fused loop, is ~2x faster forward. Their gradients stay matrix products (custom VJP).
_FEW_INPUTS = 16
_FEW_INPUTS_DENSE = 32


def _matmul_conv(x: jax.Array, kernel: jax.Array, s: int, pads: Pads) -> jax.Array:
  """Convolution as patches (im2col; the input itself for 1x1) times the kernel matrix."""
  k, cin, cout = kernel.shape[0], kernel.shape[2], kernel.shape[3]
  (t, b), (l, r) = pads
  ho, wo = _out_size(x.shape[1], t, b, k, s), _out_size(x.shape[2], l, r, k, s)
  if k == 1 and s == 1 and pads == ((0, 0), (0, 0)):
    patches = x
  else:  # [B, Ho, Wo, k k C_in] in (dy, dx, c) order = the rows of the HWIO kernel
    xp = _pad(x, pads)
    patches = jnp.concatenate([_tap(xp, dy, dx, s, ho, wo) for dy in range(k)
                               for dx in range(k)], axis=-1)
  n = x.shape[0]
  y = lax.dot_general(patches.reshape(n * ho * wo, k * k * cin),
                      kernel.reshape(k * k * cin, cout), (((1,), (0,)), ((), ())))
  return y.reshape(n, ho, wo, cout)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _few_inputs(x: jax.Array, kernel: jax.Array, s: int, pads: Pads) -> jax.Array:
  """:func:`_matmul_conv` as ``sum over (dy, dx, c) of tap[..., c] * kernel[dy, dx, c]``."""
  k, cin = kernel.shape[0], kernel.shape[2]
  (t, b), (l, r) = pads
  ho, wo = _out_size(x.shape[1], t, b, k, s), _out_size(x.shape[2], l, r, k, s)
  xp = _pad(x, pads)
  y = None
  for dy in range(k):
    for dx in range(k):
      tap = _tap(xp, dy, dx, s, ho, wo)
      for c in range(cin):
        term = tap[..., c:c + 1] * kernel[dy, dx, c]
        y = term if y is None else y + term
  return y


def _few_inputs_fwd(x, kernel, s, pads):
  return _few_inputs(x, kernel, s, pads), (x, kernel)


def _few_inputs_bwd(s, pads, res, g):
  x, kernel = res
  _, vjp = jax.vjp(lambda x, kernel: _matmul_conv(x, kernel, s, pads), x, kernel)
  return vjp(g)


_few_inputs.defvjp(_few_inputs_fwd, _few_inputs_bwd)


def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int = 1, padding: Padding = "SAME",
                   method: str = "auto") -> jax.Array:
  """Depthwise 2-D convolution, the function of ``nn.Conv(C, (k, k), feature_group_count=C)``.

  Args:
    x: ``[B, H, W, C]`` float32.
    kernel: ``[k, k, 1, C]`` (HWIO with one input channel per group).
    stride: spatial stride.
    padding: ``"SAME"`` (TF), ``"VALID"`` or ``((top, bottom), (left, right))``.
    method: ``"native"``, ``"unrolled"`` or ``"auto"`` (:func:`default_conv_method`).
  Returns:
    ``[B, Ho, Wo, C]`` with ``Ho = (H + top + bottom - k) // stride + 1`` (likewise ``Wo``).
  """
  if (x.ndim != 4 or kernel.ndim != 4 or kernel.shape[0] != kernel.shape[1]
      or kernel.shape[2] != 1 or kernel.shape[3] != x.shape[3]):
    raise ValueError(f"depthwise_conv needs x [B, H, W, C] and kernel [k, k, 1, C], got "
                     f"{tuple(x.shape)} and {tuple(kernel.shape)}")
  k, s = int(kernel.shape[0]), int(stride)
  pads = explicit_pads(x.shape, k, s, padding)
  if resolve_conv_method(method) == "native":
    return lax.conv_general_dilated(x, kernel, (s, s), pads, dimension_numbers=_DN,
                                    feature_group_count=x.shape[3])
  return _depthwise_unrolled(x, kernel, s, pads)


def pointwise_conv(x: jax.Array, kernel: jax.Array, method: str = "auto") -> jax.Array:
  """1x1 convolution (stride 1), the function of ``nn.Conv(C_out, (1, 1))`` without bias.

  Args:
    x: ``[B, H, W, C_in]`` float32.
    kernel: ``[1, 1, C_in, C_out]``.
    method: ``"native"`` (convolution), ``"unrolled"`` (matrix product) or ``"auto"``.
  Returns:
    ``[B, H, W, C_out]``.
  """
  if x.ndim != 4 or kernel.shape[:3] != (1, 1, x.shape[3]):
    raise ValueError(f"pointwise_conv needs x [B, H, W, C] and kernel [1, 1, C, C_out], got "
                     f"{tuple(x.shape)} and {tuple(kernel.shape)}")
  if resolve_conv_method(method) == "native":
    return lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=_DN)
  if x.shape[3] <= _FEW_INPUTS:
    return _few_inputs(x, kernel, 1, ((0, 0), (0, 0)))
  return _matmul_conv(x, kernel, 1, ((0, 0), (0, 0)))


def dense_conv(x: jax.Array, kernel: jax.Array, stride: int = 1, padding: Padding = "SAME",
               method: str = "auto") -> jax.Array:
  """Dense ``k x k`` convolution, ``nn.Conv(C_out, (k, k), (s, s), padding)`` without bias.

  The ``"unrolled"`` form builds the ``[B, Ho, Wo, k k C_in]`` patches; meant for few input
  channels (the 3-channel stems), where they are small.

  Args:
    x: ``[B, H, W, C_in]`` float32.
    kernel: ``[k, k, C_in, C_out]``.
    stride: spatial stride.
    padding: ``"SAME"`` (TF), ``"VALID"`` or ``((top, bottom), (left, right))``.
    method: ``"native"``, ``"unrolled"`` or ``"auto"``.
  Returns:
    ``[B, Ho, Wo, C_out]``.
  """
  if (x.ndim != 4 or kernel.ndim != 4 or kernel.shape[0] != kernel.shape[1]
      or kernel.shape[2] != x.shape[3]):
    raise ValueError(f"dense_conv needs x [B, H, W, C] and kernel [k, k, C, C_out], got "
                     f"{tuple(x.shape)} and {tuple(kernel.shape)}")
  k, s = int(kernel.shape[0]), int(stride)
  pads = explicit_pads(x.shape, k, s, padding)
  if resolve_conv_method(method) == "native":
    return lax.conv_general_dilated(x, kernel, (s, s), pads, dimension_numbers=_DN)
  if k * k * x.shape[3] <= _FEW_INPUTS_DENSE:
    return _few_inputs(x, kernel, s, pads)
  return _matmul_conv(x, kernel, s, pads)


class DepthwiseConv(nn.Module):
  """``nn.Conv(C, (k, k), (s, s), padding, feature_group_count=C, use_bias=False)``, same params.

  Parameter ``kernel [k, k, 1, C]`` (LeCun-normal init, as ``nn.Conv``).

  Attributes:
    kernel_size: square kernel side.
    stride: spatial stride.
    padding: ``"SAME"``, ``"VALID"`` or ``((top, bottom), (left, right))``.
    method: see :func:`depthwise_conv`.
  """
  kernel_size: int
  stride: int = 1
  padding: str | tuple[tuple[int, int], tuple[int, int]] = "SAME"
  method: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """``[B, H, W, C]`` -> ``[B, Ho, Wo, C]``."""
    k = self.kernel_size
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, 1, x.shape[-1]),
                        jnp.float32)
    return depthwise_conv(x, kernel, self.stride, self.padding, self.method)


class PointwiseConv(nn.Module):
  """``nn.Conv(features, (1, 1), use_bias=False)`` with the same parameter ``kernel [1, 1, C, F]``.

  Attributes:
    features: output channels.
    method: see :func:`pointwise_conv`.
  """
  features: int
  method: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """``[B, H, W, C]`` -> ``[B, H, W, features]``."""
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (1, 1, x.shape[-1], self.features), jnp.float32)
    return pointwise_conv(x, kernel, self.method)


class DenseConv(nn.Module):
  """``nn.Conv(features, (k, k), (s, s), padding, use_bias=False)``, same parameter.

  Attributes:
    features: output channels.
    kernel_size: square kernel side.
    stride: spatial stride.
    padding: ``"SAME"``, ``"VALID"`` or ``((top, bottom), (left, right))``.
    method: see :func:`dense_conv`.
  """
  features: int
  kernel_size: int
  stride: int = 1
  padding: str | tuple[tuple[int, int], tuple[int, int]] = "SAME"
  method: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """``[B, H, W, C]`` -> ``[B, Ho, Wo, features]``."""
    k = self.kernel_size
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (k, k, x.shape[-1], self.features), jnp.float32)
    return dense_conv(x, kernel, self.stride, self.padding, self.method)
