"""DCGAN-style encoder, decoder and discriminator shared by the GAN methods (SCGAN, AFF-GAN).

The layout is GANomaly's (Akcay et al. 2018, ``networks.py``) for an ``S x S`` input, ``S`` a power
of two in ``[32, 512]``, with ``n = log2(S) - 2`` feature-map blocks of widths
:func:`dcgan_widths` (``c_i = min(base * 2^i, max_features)``):

* encoder: ``Conv 4/2/1 -> LeakyReLU(0.2)`` (no BN), then ``n - 1`` blocks
  ``Conv 4/2/1 -> BN -> LeakyReLU(0.2)`` down to ``4 x 4``, then a ``4 x 4`` valid conv to the
  latent vector (7 conv blocks at 256 px, SCGAN Fig. 3); optionally MS-CAM after each feature-map
  block (SCGAN's first encoder);
* decoder: ``ConvT 4/1/0`` from the ``1 x 1`` latent to ``4 x 4`` (computed as the matrix product
  it is), ``n - 1`` blocks ``ConvT 4/2/1 -> BN -> ReLU``, then ``ConvT 4/2/1`` to the image
  channels and Tanh; every 4/2/1 transposed conv is :class:`jaxad.nn.layers.Upsample2x` (same
  parameters, sub-pixel path on CPU);
* discriminator: the encoder with a 1-unit "latent" (its logit); it also returns its last
  feature map ``[B, 4, 4, c_{n-1}]`` (GANomaly's ``features``, AFF-GAN's latent loss).

Convolutions have no bias (GANomaly). :func:`dcgan_init` re-draws parameters with GANomaly's
``weights_init`` (conv kernels ``N(0, 0.02)``, BN scale ``N(1, 0.02)``, biases 0).

References:
  Radford, Metz, Chintala, "DCGAN", ICLR 2016.
  Akcay, Atapour-Abarghouei, Breckon, "GANomaly", ACCV 2018 (and the authors' code).
  SCGAN (IEEE Access 2023) Fig. 3 and Sect. III-A; AFF-GAN (Sensors 2023).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxad.nn.fusion import MSCAM
from jaxad.nn.layers import Upsample2x, batch_norm, conv_layer

__all__ = ["LEAKY_SLOPE", "check_gan_size", "dcgan_widths", "ConvBNLeakyReLU", "LatentConv",
           "LatentToMap", "DCGANEncoder", "DCGANDecoder", "Discriminator", "dcgan_init"]

LEAKY_SLOPE = 0.2
MIN_SIZE, MAX_SIZE = 32, 512


def check_gan_size(image_size: int) -> int:
  """Returns the number of feature-map blocks ``log2(S) - 2`` for a valid ``image_size``.

  Raises:
    ValueError: ``image_size`` is not a power of two in ``[32, 512]``.
  """
  s = image_size
  if isinstance(s, bool) or not isinstance(s, int) or s < MIN_SIZE or s > MAX_SIZE or s & (s - 1):
    raise ValueError(f"image_size must be a power of two in [{MIN_SIZE}, {MAX_SIZE}] (the DCGAN "
                     f"layout halves it down to 4x4), got {image_size!r}")
  return s.bit_length() - 3


def dcgan_widths(image_size: int, base_features: int = 64,
                 max_features: int | None = None) -> tuple[int, ...]:
  """Widths of the feature-map blocks, from the ``S/2`` map down to the ``4 x 4`` map.

  Args:
    image_size: ``S``, a power of two in ``[32, 512]``.
    base_features: width of the first block (GANomaly ``ndf``/``ngf``: 64).
    max_features: optional cap on every width (``None``: GANomaly's uncapped doubling).
  Returns:
    ``(c_0, ..., c_{n-1})``, ``n = log2(S) - 2`` (6 at 256 px: 64 ... 2048).
  """
  n = check_gan_size(image_size)
  cap = max_features if max_features is not None else 1 << 30
  return tuple(min(base_features * 2 ** i, cap) for i in range(n))


class ConvBNLeakyReLU(nn.Module):
  """``Conv k/s/p (no bias) -> [BN] -> LeakyReLU(0.2)``.

  Attributes:
    features: output channels.
    kernel_size, strides, padding: PyTorch ``Conv2d`` geometry (default 4/2/1, halves H and W).
    use_bn: include the BatchNorm (GANomaly's first encoder block has none).

  Input ``[B, H, W, C_in]``; output ``[B, H / strides, W / strides, features]`` for 4/2/1.
  """
  features: int
  kernel_size: int = 4
  strides: int = 2
  padding: int = 1
  use_bn: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = conv_layer(self.features, self.kernel_size, self.strides, self.padding, name="conv")(x)
    if self.use_bn:
      x = batch_norm(train, name="bn")(x)
    return nn.leaky_relu(x, LEAKY_SLOPE)


class LatentConv(nn.Module):
  """A ``k x k`` valid convolution of a ``k x k`` map to ``features`` (a ``1 x 1`` output).

  The function of PyTorch ``Conv2d(C, features, k, 1, 0, bias=False)`` on a ``k x k`` input,
  computed as one matrix product. Parameter ``kernel [k, k, C, features]`` (``nn.Conv`` layout).
  Input ``[B, k, k, C]``; output ``[B, features]``.
  """
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (h, w, c, self.features),
                        jnp.float32)
    return x.reshape(b, h * w * c) @ kernel.reshape(h * w * c, self.features)


class LatentToMap(nn.Module):
  """``ConvTranspose2d(C, features, k, 1, 0, bias=False)`` applied to a ``1 x 1`` input.

  Parameter ``kernel [k, k, C, features]`` (PyTorch ``weight.permute(2, 3, 0, 1)``, as
  :class:`jaxad.nn.layers.Upsample2x`). Input ``[B, C]``; output ``[B, k, k, features]``.
  """
  features: int
  size: int = 4

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    k, c = self.size, z.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(in_axis=2, out_axis=3),
                        (k, k, c, self.features), jnp.float32)
    return jnp.einsum("bc,hwcf->bhwf", z, kernel)


class DCGANEncoder(nn.Module):
  """GANomaly encoder: image ``[B, S, S, C]`` -> ``(latent [B, latent_dim], features [B, 4, 4, c])``.

  Attributes:
    widths: feature-map block widths (:func:`dcgan_widths`).
    latent_dim: size of the output vector (1 for a discriminator's logit).
    attention: MS-CAM after every feature-map block (SCGAN's E1).
    attention_reduction: MS-CAM reduction r.
    attention_inner_bn: MS-CAM's inner BatchNorm (see :mod:`jaxad.nn.fusion`).
  """
  widths: tuple[int, ...]
  latent_dim: int
  attention: bool = False
  attention_reduction: int = 4
  attention_inner_bn: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    if x.ndim != 4 or x.shape[1] != x.shape[2] or x.shape[1] != 4 * 2 ** len(self.widths):
      raise ValueError(f"DCGANEncoder with {len(self.widths)} blocks expects [B, S, S, C] with "
                       f"S = {4 * 2 ** len(self.widths)}, got shape {x.shape}")
    h = x
    for i, c in enumerate(self.widths):
      h = ConvBNLeakyReLU(c, use_bn=i > 0, name=f"block{i}")(h, train)
      if self.attention:
        h = MSCAM(self.attention_reduction, self.attention_inner_bn, name=f"mscam{i}")(h, train)
    return LatentConv(self.latent_dim, name="latent")(h), h


class DCGANDecoder(nn.Module):
  """GANomaly decoder: latent ``[B, latent_dim]`` -> image ``[B, S, S, channels]`` in ``[-1, 1]``.

  Attributes:
    widths: the encoder's widths; the decoder runs them backwards.
    channels: image channels.
    upsample: path of every 4/2/1 transposed conv (:class:`jaxad.nn.layers.Upsample2x`).
  """
  widths: tuple[int, ...]
  channels: int
  upsample: str = "auto"

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = False) -> jax.Array:
    h = LatentToMap(self.widths[-1], name="latent")(z)
    h = nn.relu(batch_norm(train, name="latent_bn")(h))
    for i, c in enumerate(reversed(self.widths[:-1])):
      h = Upsample2x(c, self.upsample, use_bias=False, name=f"up{i}")(h)
      h = nn.relu(batch_norm(train, name=f"up{i}_bn")(h))
    h = Upsample2x(self.channels, self.upsample, use_bias=False, name="out")(h)
    return jnp.tanh(h)


class Discriminator(nn.Module):
  """GANomaly discriminator: ``(logits [B], features [B, 4, 4, c_{n-1}])`` for images in ``[-1, 1]``.

  ``sigmoid(logits)`` is GANomaly's ``D(x)``; losses use the logits (stable BCE).
  """
  widths: tuple[int, ...]

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    logit, features = DCGANEncoder(self.widths, 1, name="encoder")(x, train)
    return logit[:, 0], features


def dcgan_init(key: jax.Array, params: Any) -> Any:
  """GANomaly's ``weights_init``: kernels ``N(0, 0.02)``, BN scales ``N(1, 0.02)``, biases 0.

  Args:
    key: typed PRNG key.
    params: a Flax ``params`` tree (leaves named ``kernel``, ``scale``, ``bias``).
  Returns:
    A tree of the same structure, shapes and dtypes.
  """
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  sizes = [leaf.size for _, leaf in leaves]
  noise = 0.02 * jax.random.normal(key, (sum(sizes),), jnp.float32)  # one draw, sliced per leaf
  out, start = [], 0
  for (path, leaf), size in zip(leaves, sizes):
    name = getattr(path[-1], "key", str(path[-1]))
    n = noise[start:start + size].reshape(leaf.shape).astype(leaf.dtype)
    start += size
    if name == "kernel":
      out.append(n)
    elif name == "scale":
      out.append(1.0 + n)
    else:
      out.append(jnp.zeros_like(leaf))
  return jax.tree_util.tree_unflatten(treedef, out)
