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

:func:`conv_valid` is the stride-1 convolution every jaxad conv layer ends in (this module's,
:class:`jaxad.nn.layers.StridedConv`'s and the sub-pixel upsampler's). It has two exact forms:
``"conv"`` (``lax.conv_general_dilated``) and ``"matmul"`` (the ``kh kw`` shifted views of the
input concatenated on channels, then one matrix product with the kernel reshaped to
``[kh kw C_in, C_out]``). ``"auto"`` picks ``"matmul"`` on XLA:CPU when the output has no more
pixels (``B H_out W_out``) than channels (``C_out``), i.e. on the small, wide maps at the bottom
of U-Nets and GAN encoders, where the columns are smaller than the kernel: there XLA:CPU's
convolution spends most of its time re-laying out the kernel for the input and kernel
gradients (e.g. ``[2, 2, 2048, 512]`` transposed per step), while the matrix product's
gradients are matrix products with transposed operands. Measured (fwd + both gradients, batch
16, 2x2 kernels, one core; BUILD_NOTES.md, AFF-GAN): 1x1 output 2048 -> 512 channels 28.0 vs
7.6 ms, 2x2 39.5 vs 20.2 ms, 3x3 1024 -> 1024 60.1 vs 38.5 ms; from 9x9 outputs on the
convolution wins. Other backends keep the convolution (not measured there).

:func:`conv2d` has a third form, ``"tap_sum"`` (:func:`conv_tap_sum`): one matrix product per
kernel tap over only the output window whose input is not padding. ``"auto"`` picks it on
XLA:CPU when at most :data:`TAP_SUM_MAX_LIVE` of the padded convolution's multiply-adds read the
input (:func:`live_fraction`): dilated convolutions on maps not much larger than the dilation,
such as RAMFAE's ASPP. Measured (fwd + both gradients, batch 16, 3x3 kernels, one core;
BUILD_NOTES.md, RAMFAE): 8x8 map, 512 channels, rate 5 (live 0.34) 143.6 vs 59.9 ms, rate 7
(0.17) 140.9 vs 31.8 ms, rate 3 (0.56) 141.7 vs 89.6 ms, rate 1 (0.84) 146.3 vs 131.3 ms; 4x4
map, rate 1 (0.69) 39.8 vs 29.5 ms; 32x32 rate 9 (0.66) 2236 vs 1754 ms; 32x32, 256 channels,
rate 5 (0.80) 578 vs 580 ms; above the threshold the convolution wins: 16x16, 256 channels,
rate 1 (0.92) 140.1 vs 161.2 ms, 32x32, 128 channels (0.96) 142.4 vs 208.7 ms.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["CONV_FORMS", "CONV2D_FORMS", "TAP_SUM_MAX_LIVE", "conv2d", "conv_tap_sum", "conv_valid",
           "live_fraction", "matmul_form_chosen", "prune_taps", "tap_sum_chosen", "Conv2D"]

_DN = ("NHWC", "HWIO", "NHWC")

Padding = tuple[tuple[int, int], tuple[int, int]]

CONV_FORMS = ("auto", "conv", "matmul")
CONV2D_FORMS = CONV_FORMS + ("tap_sum",)
TAP_SUM_MAX_LIVE = 0.85  # "auto" sums taps at or below this live share (module docstring)
_AUTO_FORM_BACKENDS = ("cpu",)  # where "auto" may leave the convolution: measured there (module docstring)


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


def _check_operands(x: jax.Array, kernel: jax.Array, padding: Padding | None = None) -> None:
  """``x [B, H, W, C]``, ``kernel [kh, kw, C, C_out]`` with the same ``C``; padding ``>= 0`` if given."""
  if x.ndim != 4 or kernel.ndim != 4 or kernel.shape[2] != x.shape[3]:
    raise ValueError(f"the convolution needs x [B, H, W, C] and kernel [kh, kw, C, C_out] with the same C, "
                     f"got {x.shape} and {kernel.shape}")
  if padding is not None and min(padding[0] + padding[1]) < 0:
    raise ValueError(f"padding must be >= 0, got {padding}")


def _output_size(x: jax.Array, kernel: jax.Array, padding: Padding, dilation: int) -> tuple[int, int]:
  """Checks the operands; ``(H_out, W_out)`` of the padded stride-1 convolution."""
  _check_operands(x, kernel, padding)
  (t, bo), (le, ri) = padding
  return (x.shape[1] + t + bo - dilation * (kernel.shape[0] - 1),
          x.shape[2] + le + ri - dilation * (kernel.shape[1] - 1))


def _auto_form(form: str, allowed: tuple[str, ...], name: str, backend: str | None) -> bool | None:
  """Validates ``form``; whether it is ``name`` when given explicitly, ``False`` for ``"auto"`` off
  :data:`_AUTO_FORM_BACKENDS`, ``None`` when ``"auto"`` leaves the choice to the shape rule."""
  if form not in allowed:
    raise ValueError(f"form must be one of {allowed}, got {form!r}")
  if form != "auto":
    return form == name
  backend = jax.default_backend() if backend is None else backend
  return None if backend in _AUTO_FORM_BACKENDS else False


def matmul_form_chosen(form: str, out_pixels: int, out_channels: int, backend: str | None = None) -> bool:
  """Whether :func:`conv_valid` computes with the matrix-product form.

  Args:
    form: one of :data:`CONV_FORMS`.
    out_pixels: ``B H_out W_out`` of the convolution.
    out_channels: ``C_out``.
    backend: JAX backend name; ``None`` = ``jax.default_backend()`` (asked only for ``"auto"``).
  """
  auto = _auto_form(form, CONV_FORMS, "matmul", backend)
  return auto if auto is not None else out_pixels <= out_channels


def conv_valid(x: jax.Array, kernel: jax.Array, padding: Padding = ((0, 0), (0, 0)), dilation: int = 1,
               *, form: str = "auto", precision: jax.lax.Precision | None = None) -> jax.Array:
  """Stride-1 convolution with non-negative zero padding, as a convolution or a matrix product.

  Args:
    x: ``[B, H, W, C_in]``.
    kernel: ``[kh, kw, C_in, C_out]`` (HWIO).
    padding: ``((top, bottom), (left, right))``, each ``>= 0``.
    dilation: kernel dilation.
    form: ``"conv"``, ``"matmul"`` or ``"auto"`` (see :func:`matmul_form_chosen`); the same
      function, up to float32 summation order.
    precision: passed to the convolution or the matrix product.
  Returns:
    ``[B, H_out, W_out, C_out]`` with ``H_out = H + top + bottom - dilation (kh - 1)`` (W alike).
  """
  ho, wo = _output_size(x, kernel, padding, dilation)
  kh, kw, cin, cout = kernel.shape
  b = x.shape[0]
  if not matmul_form_chosen(form, b * ho * wo, cout):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding, rhs_dilation=(dilation, dilation),
                                        dimension_numbers=_DN, precision=precision)
  if any(padding[0] + padding[1]):
    x = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  views = [x[:, i * dilation:i * dilation + ho, j * dilation:j * dilation + wo]
           for i in range(kh) for j in range(kw)]  # tap order (i, j, c) = the kernel's row-major order
  cols = views[0] if len(views) == 1 else jnp.concatenate(views, axis=-1)
  y = jnp.dot(cols.reshape(b * ho * wo, kh * kw * cin), kernel.reshape(kh * kw * cin, cout),
              precision=precision)
  return y.reshape(b, ho, wo, cout)


def _tap_windows(size: int, k: int, lo: int, d: int, out: int) -> list[tuple[int, int, int]]:
  """Per tap of one spatial dim: ``(t, o0, o1)``, the output range whose input is not padding."""
  spans = []
  for t in range(k):
    o0, o1 = max(0, lo - t * d), min(out, size + lo - t * d)
    if o1 > o0:
      spans.append((t, o0, o1))
  return spans


def live_fraction(x_shape: Sequence[int], kernel_shape: Sequence[int], padding: Padding, dilation: int) -> float:
  """Share of a padded convolution's multiply-adds that read the input rather than the padding."""
  frac = 1.0
  for size, k, (lo, hi) in zip(x_shape[1:3], kernel_shape[:2], padding):
    out = size + lo + hi - dilation * (k - 1)
    frac *= sum(o1 - o0 for _, o0, o1 in _tap_windows(size, k, lo, dilation, out)) / (k * out)
  return frac


def conv_tap_sum(x: jax.Array, kernel: jax.Array, padding: Padding, dilation: int = 1, *,
                 precision: jax.lax.Precision | None = None) -> jax.Array:
  """A padded stride-1 convolution as a sum over kernel taps of matrix products on the unpadded input.

  Tap ``(i, j)`` adds ``x[rows, cols] @ kernel[i, j]`` to the output window whose inputs lie inside
  the map, so no multiply-add reads padding: for RAMFAE's dilated ASPP branches on an 8x8 map
  (rates 5 and 7) that is 34 % and 17 % of the convolution's work. Same function as
  :func:`conv_valid` on the padded input (up to float32 summation order).

  Args / returns as :func:`conv_valid` (padding ``>= 0``).
  """
  ho, wo = _output_size(x, kernel, padding, dilation)
  kh, kw, cin, cout = kernel.shape
  b, h, w, _ = x.shape
  (t, _), (le, _) = padding
  y = jnp.zeros((b, ho, wo, cout), x.dtype)
  for i, r0, r1 in _tap_windows(h, kh, t, dilation, ho):
    for j, c0, c1 in _tap_windows(w, kw, le, dilation, wo):
      a0, b0 = r0 + i * dilation - t, c0 + j * dilation - le
      xs = x[:, a0:a0 + r1 - r0, b0:b0 + c1 - c0]
      part = jnp.dot(xs.reshape(-1, cin), kernel[i, j], precision=precision)
      part = part.reshape(b, r1 - r0, c1 - c0, cout)
      y = y + jnp.pad(part, ((0, 0), (r0, ho - r1), (c0, wo - c1), (0, 0)))
  return y


def tap_sum_chosen(form: str, x_shape: Sequence[int], kernel_shape: Sequence[int], padding: Padding,
                   dilation: int, backend: str | None = None) -> bool:
  """Whether :func:`conv2d` computes with :func:`conv_tap_sum` (``form`` one of :data:`CONV2D_FORMS`)."""
  auto = _auto_form(form, CONV2D_FORMS, "tap_sum", backend)
  return auto if auto is not None else live_fraction(x_shape, kernel_shape, padding, dilation) <= TAP_SUM_MAX_LIVE


def conv2d(x: jax.Array, kernel: jax.Array, padding: int | Sequence[Sequence[int]] = 0,
           dilation: int = 1, *, form: str = "auto",
           precision: jax.lax.Precision | None = None) -> jax.Array:
  """Stride-1 convolution, the function of PyTorch ``Conv2d(padding, dilation, bias=False)``.

  Args:
    x: ``[B, H, W, C_in]``.
    kernel: ``[kh, kw, C_in, C_out]`` (HWIO; PyTorch ``weight.permute(2, 3, 1, 0)``).
    padding: symmetric zero padding (int) or ``((top, bottom), (left, right))``.
    dilation: kernel dilation.
    form: one of :data:`CONV2D_FORMS`: ``"tap_sum"`` (:func:`conv_tap_sum`), the forms of
      :func:`conv_valid`, or ``"auto"`` (:func:`tap_sum_chosen`, else :func:`conv_valid`'s choice).
    precision: passed to the convolution (``None`` = backend default).
  Returns:
    ``[B, H + top + bottom - dilation (kh - 1), W + left + right - dilation (kw - 1), C_out]``.
  """
  _check_operands(x, kernel)
  d = int(dilation)
  (sy, sx), pad = prune_taps(x.shape, kernel.shape, _as_padding(padding), d)
  kernel = kernel[sy, sx]
  if min(pad[0] + pad[1]) < 0:  # a crop: slice first, XLA convolutions want padding >= 0
    x = jax.lax.pad(x, jnp.zeros((), x.dtype),
                    ((0, 0, 0), (min(pad[0][0], 0), min(pad[0][1], 0), 0),
                     (min(pad[1][0], 0), min(pad[1][1], 0), 0), (0, 0, 0)))
    pad = tuple((max(lo, 0), max(hi, 0)) for lo, hi in pad)
  if tap_sum_chosen(form, x.shape, kernel.shape, pad, d):
    return conv_tap_sum(x, kernel, pad, d, precision=precision)
  return conv_valid(x, kernel, pad, d, form=form, precision=precision)


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
