"""Convolutional building blocks shared by every model: Conv-BN-ReLU, encoder and
residual decoder blocks, and a 2x upsampler with a transposed-conv and a sub-pixel path.

All modules take and return NHWC ``float32`` arrays and follow PyTorch's layer
semantics (explicit symmetric padding, BatchNorm ``eps=1e-5`` and running-average
momentum 0.1, i.e. Flax ``momentum=0.9``), so weights copied from a PyTorch module
reproduce its outputs (tested to 1e-4 in ``tests/nn/test_layers.py``).

BatchNorm: pass ``train=True`` during training (batch statistics, ``batch_stats``
collection mutable) and ``train=False`` at test time (running averages).

The upsampler (:class:`Upsample2x`) has **one** parameterisation — a 4x4 kernel
``[4, 4, C_in, C_out]`` with the meaning of a PyTorch ``ConvTranspose2d(k=4, s=2, p=1)``
(``weight.permute(2, 3, 0, 1)``) — and two mathematically identical ways to compute it:

* ``"transpose"``: a dilated-input convolution (what ``ConvTranspose`` lowers to);
* ``"subpixel"``: the transposed conv is the adjoint of the 4/2/1 convolution, which is a
  stride-1 2x2 convolution of the space-to-depth input (:class:`StridedConv`); so the layer is
  **one** stride-1 2x2 convolution of the zero-padded input to ``4 * C_out`` channels (the four
  output phases, kernel ``K'[t_y, t_x, c, (a, b, o)] = kernel[2 - 2 t_y + a, 2 - 2 t_x + b, c, o]``)
  followed by depth-to-space (Shi et al. 2016) and a one-pixel crop. Same parameters, same
  function; it computes ``(H + 1)(W + 1) / (H W)`` of the transposed conv's multiply-adds (the
  crop discards a border), in one convolution whose kernel gradient is one contraction.
  A 1x1 input is the matrix product ``x @ kernel[1:3, 1:3]``; small, wide maps use the
  matrix-product form of the 2x2 convolution on CPU (:func:`jaxad.nn.conv.conv_valid`).
  (Earlier forms, measured slower on XLA:CPU and kept only as history in BUILD_NOTES.md: four
  separate 2x2 phase convolutions, 1.1-4x slower for small maps or few output channels; and
  :func:`transpose_kernel_to_subpixel`'s single 3x3 conv, 36/16 of the work.) On XLA:CPU the
  weight gradient of the dilated-input convolution is very slow, the sub-pixel path is not
  (``experiments/benchmark_upsample.py``; default per backend: :func:`default_upsample`).

References:
  Shi et al., "Real-Time Single Image and Video Super-Resolution Using an Efficient
  Sub-Pixel Convolutional Neural Network", CVPR 2016 (depth-to-space).
  Odena et al., "Deconvolution and Checkerboard Artifacts", Distill 2016.
  Sun, Wang, Li, "RAMFAE", 2023, Table 1 and Fig. 2 (CBR, EncoderBlock, DecoderBlock).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxad.nn.conv import Conv2D, conv_valid

__all__ = [
    "UPSAMPLE_METHODS", "default_upsample", "check_upsample", "resolve_upsample", "batch_norm",
    "ConvBNReLU", "EncoderBlock", "Upsample2x", "ResidualDecoderBlock", "depth_to_space",
    "transpose_kernel_to_subpixel", "conv1x1", "conv_layer", "space_to_depth", "StridedConv",
]

UPSAMPLE_METHODS = ("transpose", "subpixel")
_DN = ("NHWC", "HWIO", "NHWC")

# Measured in experiments/benchmark_upsample.py (see BUILD_NOTES.md): on XLA:CPU the
# sub-pixel path trains several times faster; on GPU/TPU the transposed conv is a
# native cuDNN/TPU op (not measured here, no accelerator available).
_DEFAULT_UPSAMPLE = {"cpu": "subpixel"}


def default_upsample(backend: str | None = None) -> str:
  """The upsampler path chosen for a JAX backend.

  Args:
    backend: ``"cpu"``, ``"gpu"``, ``"tpu"``...; ``None`` means ``jax.default_backend()``.
  Returns:
    ``"subpixel"`` on CPU (measured faster), ``"transpose"`` elsewhere.
  """
  backend = jax.default_backend() if backend is None else backend
  return _DEFAULT_UPSAMPLE.get(backend, "transpose")


def check_upsample(method: str) -> str:
  """Validates an upsampler name (``"auto"`` or one of :data:`UPSAMPLE_METHODS`) and returns it.

  Unlike :func:`resolve_upsample` it does not ask JAX for its backend, so configs can be checked
  before the backend exists (``jaxad.train.host_memory`` must run before that).
  """
  if method != "auto" and method not in UPSAMPLE_METHODS:
    raise ValueError(f"upsample must be 'auto' or one of {UPSAMPLE_METHODS}, got {method!r}")
  return method


def resolve_upsample(method: str) -> str:
  """Maps ``"auto"`` to :func:`default_upsample` and validates the name."""
  return default_upsample() if check_upsample(method) == "auto" else method


def batch_norm(train: bool, name: str | None = None) -> nn.BatchNorm:
  """A BatchNorm with PyTorch's defaults (eps 1e-5, running-average momentum 0.1)."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


def _pad(padding: int) -> tuple[tuple[int, int], tuple[int, int]]:
  return ((padding, padding), (padding, padding))


class ConvBNReLU(nn.Module):
  """Conv -> BatchNorm -> ReLU (the paper's "CBR").

  Attributes:
    features: output channels.
    kernel_size: square kernel side.
    strides: stride in both spatial dims.
    padding: symmetric zero padding (PyTorch's ``padding``).
    dilation: kernel dilation (``padding = dilation`` keeps the size for 3x3).
    use_bias: bias in the conv; off by default because BatchNorm's shift replaces it.
    relu: apply the ReLU (``False`` gives Conv-BN).

  Input ``[B, H, W, C_in]``; output ``[B, H', W', features]`` with
  ``H' = (H + 2 padding - dilation (kernel_size - 1) - 1) // strides + 1``.
  """
  features: int
  kernel_size: int = 3
  strides: int = 1
  padding: int = 1
  dilation: int = 1
  use_bias: bool = False
  relu: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = conv_layer(self.features, self.kernel_size, self.strides, self.padding, self.dilation,
                   self.use_bias, name="conv")(x)
    x = batch_norm(train, name="bn")(x)
    return nn.relu(x) if self.relu else x


def conv_layer(features: int, kernel_size: int, strides: int = 1, padding: int = 0,
               dilation: int = 1, use_bias: bool = False, name: str | None = None) -> nn.Module:
  """The fastest exact form of a PyTorch ``Conv2d(k, s, padding, dilation)`` (NHWC).

  Stride 1: :class:`jaxad.nn.conv.Conv2D` (prunes all-padding taps); ``k % s == 0``:
  :class:`StridedConv` (space-to-depth, stride-1 forward and backward); otherwise ``nn.Conv``.
  All three have the parameters of ``nn.Conv`` (``kernel [k, k, C_in, features]``, optional
  ``bias``), so checkpoints do not depend on the form chosen.
  """
  k, s = kernel_size, strides
  if s == 1:
    return Conv2D(features, k, padding, dilation, use_bias, name=name)
  if k % s == 0 and dilation == 1:
    return StridedConv(features, k, s, padding, use_bias, name=name)
  return nn.Conv(features, (k, k), strides=(s, s), padding=_pad(padding),
                 kernel_dilation=(dilation, dilation), use_bias=use_bias, name=name)


def space_to_depth(x: jax.Array, block: int = 2) -> jax.Array:
  """``[B, r H, r W, C]`` -> ``[B, H, W, (r, r, C)]``; the inverse of :func:`depth_to_space`."""
  b, h, w, c = x.shape
  if h % block or w % block:
    raise ValueError(f"spatial size {h}x{w} not divisible by block {block}")
  x = x.reshape(b, h // block, block, w // block, block, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // block, w // block, block * block * c)


class StridedConv(nn.Module):
  """A ``k x k`` stride-``s`` convolution (``k % s == 0``) computed as space-to-depth + stride 1.

  Same parameters as ``nn.Conv`` (``kernel [k, k, C_in, C_out]``, optional ``bias``) and the
  same outputs as PyTorch ``Conv2d(k, s, padding)``; the padded input is rearranged by
  :func:`space_to_depth` and convolved with the kernel reshaped to
  ``[k / s, k / s, s^2 C_in, C_out]`` (stride 1, exact multiply-adds). On XLA:CPU the
  input gradient of a strided convolution is a dilated-input convolution, the slow path
  of transposed convolutions; this form keeps forward and backward stride-1
  (:func:`jaxad.nn.conv.conv_valid`: a matrix product on small, wide maps on CPU). Falls back
  to a strided convolution when the padded size is not divisible by ``s``.
  """
  features: int
  kernel_size: int = 4
  strides: int = 2
  padding: int = 1
  use_bias: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, s, p = self.kernel_size, self.strides, self.padding
    cin = x.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, cin, self.features),
                        jnp.float32)
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    if xp.shape[1] % s or xp.shape[2] % s:
      y = jax.lax.conv_general_dilated(xp, kernel, (s, s), "VALID", dimension_numbers=_DN)
    else:
      ks = k // s
      w = kernel.reshape(ks, s, ks, s, cin, self.features).transpose(0, 2, 1, 3, 4, 5)
      w = w.reshape(ks, ks, s * s * cin, self.features)
      y = conv_valid(space_to_depth(xp, s), w)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    return y


class EncoderBlock(nn.Module):
  """Two CBRs: the first with the block's kernel/stride/padding, the second 3x3 s1 p1.

  RAMFAE Table 1 stages 0-3 (3x3 s1 p1, then 4x4 s2 p1 which halves H and W).

  Input ``[B, H, W, C_in]``; output ``[B, H / strides, W / strides, features]``.
  """
  features: int
  kernel_size: int = 3
  strides: int = 1
  padding: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = ConvBNReLU(self.features, self.kernel_size, self.strides, self.padding, name="cbr1")(x, train)
    return ConvBNReLU(self.features, 3, 1, 1, name="cbr2")(x, train)


def depth_to_space(x: jax.Array, block: int = 2) -> jax.Array:
  """``[B, H, W, (r, r, C)]`` -> ``[B, r H, r W, C]``; channel order (row phase, col phase, c)."""
  b, h, w, c = x.shape
  if c % (block * block):
    raise ValueError(f"channels {c} not divisible by block^2 = {block * block}")
  co = c // (block * block)
  x = x.reshape(b, h, w, block, block, co)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * block, w * block, co)


# For output phase a in {0, 1} and 3x3 offset d in {0, 1, 2} (input row m + d - 1 for
# output row 2m + a), the 4x4 transposed-conv tap is k = a + 3 - 2d when 0 <= k < 4.
_TAP = np.array([[a + 3 - 2 * d for a in range(2)] for d in range(3)])  # [d, a]
_TAP_VALID = (_TAP >= 0) & (_TAP < 4)
_TAP_INDEX = np.clip(_TAP, 0, 3)


def transpose_kernel_to_subpixel(kernel: jax.Array) -> jax.Array:
  """Rearranges a 4/2/1 transposed-conv kernel into the equivalent sub-pixel kernel.

  Args:
    kernel: ``[4, 4, C_in, C_out]``, PyTorch ``ConvTranspose2d(k=4, s=2, p=1)`` weight
      permuted ``(2, 3, 0, 1)``: ``out[2i - 1 + ky, 2j - 1 + kx] += in[i, j] @ kernel[ky, kx]``.
  Returns:
    ``[3, 3, C_in, 4 C_out]`` kernel (channel order ``(a, b, c_out)``) such that a
    stride-1, padding-1 convolution followed by :func:`depth_to_space` equals the
    transposed convolution.
  """
  if kernel.shape[:2] != (4, 4):
    raise ValueError(f"kernel must be [4, 4, C_in, C_out], got {kernel.shape}")
  cin, cout = kernel.shape[2:]
  iy = _TAP_INDEX[:, None, :, None]  # [dy, 1, a, 1]
  ix = _TAP_INDEX[None, :, None, :]  # [1, dx, 1, b]
  w = kernel[iy, ix]  # [3, 3, 2, 2, C_in, C_out]
  valid = (_TAP_VALID[:, None, :, None] & _TAP_VALID[None, :, None, :])
  w = w * jnp.asarray(valid, kernel.dtype)[..., None, None]
  return w.transpose(0, 1, 4, 2, 3, 5).reshape(3, 3, cin, 4 * cout)


def _block_kernel(kernel: jax.Array) -> jax.Array:
  """``[4, 4, C_in, C_out]`` transposed-conv kernel -> ``[2, 2, C_in, 4 C_out]`` (order ``a, b, o``).

  Output row ``2 m + a - 1`` of the transposed conv reads input rows ``m - 1 + t`` (``t`` in
  ``{0, 1}``) through tap ``k_y = 2 (1 - t) + a``; columns alike.
  """
  cin, cout = kernel.shape[2:]
  k = kernel.reshape(2, 2, 2, 2, cin, cout)[::-1, :, ::-1]  # [t_y, a, t_x, b, C_in, C_out]
  return k.transpose(0, 2, 4, 1, 3, 5).reshape(2, 2, cin, 4 * cout)


def _subpixel_upsample(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """4/2/1 transposed conv as one 2x2 conv to the four phases + depth-to-space + crop."""
  b, h, w, cin = x.shape
  cout = kernel.shape[-1]
  if h == 1 and w == 1:  # every output pixel reads the one input pixel: a matrix product
    y = jnp.dot(x.reshape(b, cin), kernel[1:3, 1:3].transpose(2, 0, 1, 3).reshape(cin, 4 * cout))
    return y.reshape(b, 2, 2, cout)
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return depth_to_space(conv_valid(xp, _block_kernel(kernel)), 2)[:, 1:-1, 1:-1]


class Upsample2x(nn.Module):
  """2x learned upsampling, the function of a ``ConvTranspose2d(k=4, s=2, p=1)``.

  Attributes:
    features: output channels.
    method: ``"transpose"``, ``"subpixel"`` (same parameters, same outputs up to float
      rounding) or ``"auto"`` (:func:`default_upsample`).
    use_bias: add a bias (PyTorch's default for ConvTranspose2d).

  Parameters: ``kernel [4, 4, C_in, features]`` (see :func:`transpose_kernel_to_subpixel`
  for the layout), ``bias [features]``.
  Input ``[B, H, W, C_in]``; output ``[B, 2H, 2W, features]``.
  """
  features: int
  method: str = "auto"
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    method = resolve_upsample(self.method)
    cin = x.shape[-1]
    # Fan-in initialisation as for a 4x4 conv over C_in channels.
    kernel = self.param("kernel", nn.initializers.lecun_normal(in_axis=(0, 1, 2), out_axis=3),
                        (4, 4, cin, self.features), jnp.float32)
    if method == "transpose":
      # Transposed conv = convolution of the 2x-dilated input with the flipped kernel,
      # padded by k - 1 - p = 2 on each side.
      y = jax.lax.conv_general_dilated(x, kernel[::-1, ::-1], window_strides=(1, 1),
                                       padding=((2, 2), (2, 2)), lhs_dilation=(2, 2),
                                       dimension_numbers=_DN)
    else:
      y = _subpixel_upsample(x, kernel)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    return y


class ResidualDecoderBlock(nn.Module):
  """2x upsampling decoder block with a residual connection (RAMFAE DecoderBlock).

  ``u = ReLU(BN(Upsample2x(x)))``; ``y = u + CBR(CBR(u))`` with two 3x3 s1 p1 CBRs.

  Attributes:
    features: output channels.
    upsample: upsampler path, see :class:`Upsample2x`.
    residual: keep the skip connection (``False`` for the paper's Fig. 8 ablation).

  Input ``[B, H, W, C_in]``; output ``[B, 2H, 2W, features]``.

  References: RAMFAE Table 1 stages 5-7, Fig. 2 and Sect. 3.1 (transposed conv 4/2/1,
  two CBRs, residual structure between decoder layers).
  """
  features: int
  upsample: str = "auto"
  residual: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    # The conv bias is kept (PyTorch ConvTranspose2d default); BN removes its effect.
    u = Upsample2x(self.features, self.upsample, name="up")(x)
    u = nn.relu(batch_norm(train, name="up_bn")(u))
    y = ConvBNReLU(self.features, name="cbr1")(u, train)
    y = ConvBNReLU(self.features, name="cbr2")(y, train)
    return u + y if self.residual else y


def conv1x1(features: int, use_bias: bool = True, name: str | None = None) -> nn.Conv:
  """A 1x1 convolution (helper for attention / fusion blocks)."""
  return nn.Conv(features, (1, 1), use_bias=use_bias, name=name)

