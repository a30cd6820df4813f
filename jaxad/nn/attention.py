"""Attention blocks (channel / spatial re-weighting of NHWC feature maps).

* :class:`CoordinateAttention` (Hou et al. 2021), used by RAMFAE's MFFE.
* :class:`CBAMVariant` and :class:`QueryKeyAttention`, DFDA-AD's two blocks (Masoudi 2024): a CBAM
  whose channel attention adds the average- and max-pooled descriptors before a three-layer MLP, and
  a query-key attention whose query is max-pooled and whose key is average-pooled.

MS-CAM / AFF (SCGAN, AFF-GAN) live in :mod:`jaxad.nn.fusion`. Every block exists once.

Gates: DFDA-AD's blocks multiply the features by ``gate_scale * sigmoid(z)``. The paper writes the
sigmoid alone (``gate_scale=1``); the default ``gate_scale=2`` with the last layer of every gate
initialised to zero (``identity_init=True``) makes an untrained block the exact identity
(``2 * sigmoid(0) = 1``), so training starts from the plain backbone features.

References:
  Hou, Zhou, Feng, "Coordinate Attention for Efficient Mobile Network Design",
  CVPR 2021 (arXiv:2103.02907), Eqs. (4)-(9) and the authors' ``CoordAtt`` code.
  Sun, Wang, Li, "RAMFAE", 2023, Sect. 3.1.1, Eqs. (1)-(5), Fig. 4.
  Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018 (Eqs. 1-4).
  Masoudi, "DFDA-AD", J. Modeling in Engineering 2024, Sects. 2-3 and 2-4, Figs. 2-3.
  Ishida et al., "SA-PatchCore", IEEE Access 11, 2023 (the self-attention DFDA-AD simplifies).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxad.nn.layers import batch_norm, conv1x1

__all__ = ["hard_swish", "CoordinateAttention", "CBAMVariant", "QueryKeyAttention"]


def hard_swish(x: jax.Array) -> jax.Array:
  """``x * relu6(x + 3) / 6`` (the non-linearity of the reference CoordAtt)."""
  return x * jnp.clip(x + 3.0, 0.0, 6.0) / 6.0


_ACTIVATIONS = {"hard_swish": hard_swish, "relu": nn.relu}


class CoordinateAttention(nn.Module):
  """Coordinate attention: direction-aware pooling, shared 1x1 transform, two sigmoid gates.

  ``z^h = mean_W x`` ``[B, H, 1, C]`` and ``z^w = mean_H x`` (Eqs. 1-2) are concatenated
  along the spatial axis, passed through a shared 1x1 conv (C -> ``mip``), BatchNorm and
  the non-linearity ``delta`` (Eq. 3); split back; ``g^h = sigmoid(F_h(f^h))``,
  ``g^w = sigmoid(F_w(f^w))`` (Eq. 4); ``y = x * g^h * g^w`` (Eq. 5).

  Attributes:
    reduction: channel reduction, ``mip = max(min_channels, C // reduction)`` (reference 32).
    min_channels: lower bound of ``mip`` (reference 8).
    activation: ``"hard_swish"`` (reference) or ``"relu"``.

  Input ``[B, H, W, C]``; output the same shape (``x`` re-weighted by gates in (0, 1)).
  """
  reduction: int = 32
  min_channels: int = 8
  activation: str = "hard_swish"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.activation not in _ACTIVATIONS:
      raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {self.activation!r}")
    _, h, w, c = x.shape
    mip = max(self.min_channels, c // self.reduction)
    z_h = jnp.mean(x, axis=2, keepdims=True)                         # [B, H, 1, C]
    z_w = jnp.mean(x, axis=1, keepdims=True).transpose(0, 2, 1, 3)   # [B, W, 1, C]
    f = jnp.concatenate([z_h, z_w], axis=1)                          # [B, H + W, 1, C]
    f = conv1x1(mip, name="conv1")(f)
    f = _ACTIVATIONS[self.activation](batch_norm(train, name="bn1")(f))
    f_h, f_w = f[:, :h], f[:, h:].transpose(0, 2, 1, 3)              # [B,H,1,m], [B,1,W,m]
    g_h = jax.nn.sigmoid(conv1x1(c, name="conv_h")(f_h))
    g_w = jax.nn.sigmoid(conv1x1(c, name="conv_w")(f_w))
    return x * g_h * g_w


def _check_odd(value: int, name: str) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % 2 == 0:
    raise ValueError(f"{name} must be an odd int >= 1, got {value!r}")
  return value


def _checked_gate_scale(x: jax.Array, gate_scale: float) -> float:
  """Checks the input ``x [B, H, W, C]`` (float) and returns ``gate_scale`` (> 0) as a float."""
  if x.ndim != 4:
    raise ValueError(f"x: expected a feature map [B, H, W, C], got shape {tuple(x.shape)}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"x: expected a float feature map, got {x.dtype}")
  if not gate_scale > 0:
    raise ValueError(f"gate_scale must be > 0, got {gate_scale!r}")
  return float(gate_scale)


class CBAMVariant(nn.Module):
  """DFDA-AD's CBAM: summed avg+max channel descriptor, three dense layers, then spatial attention.

  Channel attention (Sect. 2-3: the pooled maps "are aggregated and, instead of two fully connected
  layers, pass through three fully connected layers, then the sigmoid")::

    z   = mean_{H,W} x + max_{H,W} x                               [B, C]
    g_c = gate_scale * sigmoid(fc3(relu(fc2(relu(fc1(z))))))       [B, 1, 1, C]
    y   = x * g_c

  with ``fc1: C -> m``, ``fc2: m -> m``, ``fc3: m -> C`` (biases; ``m = max(min_hidden,
  C // reduction)``). Spatial attention (CBAM's, Eq. 3)::

    s   = concat(mean_C y, max_C y)                                [B, H, W, 2]
    g_s = gate_scale * sigmoid(conv_{k x k}(s))                    [B, H, W, 1]
    out = y * g_s

  (one output channel, zero padding ``k // 2``, no bias, no BatchNorm).

  Attributes:
    reduction: hidden width ``C // reduction`` (CBAM: 16).
    min_hidden: lower bound of the hidden width.
    spatial_kernel: odd kernel size of the spatial convolution (CBAM: 7).
    gate_scale: gates are ``gate_scale * sigmoid`` in ``(0, gate_scale)`` (paper: 1; default 2).
    identity_init: zero-initialise ``fc3`` and the spatial kernel, so that with ``gate_scale=2``
      the untrained block returns ``x`` exactly.

  Input ``[B, H, W, C]`` float; output the same shape (``x`` times gates in ``(0, gate_scale)``).
  Parameters: ``fc1 {kernel [C, m], bias [m]}``, ``fc2 {[m, m], [m]}``, ``fc3 {[m, C], [C]}``,
  ``spatial {kernel [k, k, 2, 1]}``.
  """
  reduction: int = 16
  min_hidden: int = 8
  spatial_kernel: int = 7
  gate_scale: float = 2.0
  identity_init: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = _checked_gate_scale(x, self.gate_scale)
    k = _check_odd(self.spatial_kernel, "spatial_kernel")
    c = x.shape[-1]
    m = max(self.min_hidden, c // self.reduction)
    last = nn.initializers.zeros if self.identity_init else nn.initializers.lecun_normal()
    z = jnp.mean(x, axis=(1, 2)) + jnp.max(x, axis=(1, 2))                        # [B, C]
    h = nn.relu(nn.Dense(m, name="fc1")(z))
    h = nn.relu(nn.Dense(m, name="fc2")(h))
    g_c = scale * jax.nn.sigmoid(nn.Dense(c, kernel_init=last, name="fc3")(h))  # [B, C]
    y = x * g_c[:, None, None, :]
    s = jnp.concatenate([jnp.mean(y, axis=-1, keepdims=True),
                         jnp.max(y, axis=-1, keepdims=True)], axis=-1)            # [B, H, W, 2]
    conv = nn.Conv(1, (k, k), padding=((k // 2, k // 2), (k // 2, k // 2)), use_bias=False,
                   kernel_init=last, name="spatial")
    return y * (scale * jax.nn.sigmoid(conv(s)))


class QueryKeyAttention(nn.Module):
  """DFDA-AD's query-key attention: max-pooled queries, average-pooled keys, ``sigmoid(Q K^T)``.

  Sect. 2-4: "max pooling is taken as the query and average pooling as the key ... S_QK = X . Y^T;
  applying the sigmoid to S_QK gives the weighted map, which is multiplied by the original feature
  map; S_QK is simplified to reduce computation". Ours, with ``N = H W`` positions::

    Q = rms(maxpool_{p x p}(x)) W_q + b_q                          [B, N, d]
    K = rms(avgpool_{p x p}(x)) W_k + b_k                          [B, N, d]
    S = Q K^T / sqrt(d)                                            [B, N, N]
    g = gate_scale * mean_j sigmoid(S_ij)                          [B, H, W, 1]
    out = x * g

  Pooling is local (``p x p`` window, stride 1, "same" size; max pads with ``-inf``, the average
  counts valid pixels only), so every position keeps its own query and key. ``rms(v) = v /
  sqrt(mean_c v^2 + 1e-6)`` per position (``normalize=True``; the paper is silent): backbone
  activations reach tens, and without it one Adam step of 2e-4 on every entry of ``W_q`` moves
  ``S`` by tens and saturates the sigmoid. The "simplification":
  no value projection and no ``N x C`` aggregation; the ``N x N`` sigmoid affinities are averaged
  over the keys into one weight per position (how strongly a position's neighbourhood agrees with
  the rest of the image), which re-weights all its channels.

  Attributes:
    dim: query/key width ``d``.
    pool: odd pooling window ``p`` (1: no pooling).
    normalize: divide the pooled descriptors by their RMS over channels (``rms`` above).
    gate_scale: gate range ``(0, gate_scale)`` (paper: 1; default 2).
    identity_init: zero-initialise ``W_q`` and ``b_q`` (``S = 0``, so with ``gate_scale=2`` the
      untrained block returns ``x`` exactly).

  Input ``[B, H, W, C]`` float; output the same shape. Parameters: ``query {kernel [C, d],
  bias [d]}``, ``key {kernel [C, d], bias [d]}``. Memory ``O(B N^2)`` (784^2 floats per image on
  a 28x28 map).
  """
  dim: int = 32
  pool: int = 3
  normalize: bool = True
  gate_scale: float = 2.0
  identity_init: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = _checked_gate_scale(x, self.gate_scale)
    p = _check_odd(self.pool, "pool")
    if not isinstance(self.dim, int) or self.dim < 1:
      raise ValueError(f"dim must be an int >= 1, got {self.dim!r}")
    b, h, w, c = x.shape
    q_in, k_in = x, x
    if p > 1:
      q_in = nn.max_pool(x, (p, p), strides=(1, 1), padding="SAME")
      k_in = nn.avg_pool(x, (p, p), strides=(1, 1), padding="SAME", count_include_pad=False)
    if self.normalize:
      rms = lambda v: v * jax.lax.rsqrt(jnp.mean(jnp.square(v), axis=-1, keepdims=True) + 1e-6)
      q_in, k_in = rms(q_in), rms(k_in)
    zeros = nn.initializers.zeros
    q_init = zeros if self.identity_init else nn.initializers.lecun_normal()
    q = nn.Dense(self.dim, kernel_init=q_init, bias_init=zeros, name="query")(q_in)
    k = nn.Dense(self.dim, name="key")(k_in)
    q, k = q.reshape(b, h * w, self.dim), k.reshape(b, h * w, self.dim)
    s = jnp.einsum("bnd,bmd->bnm", q, k, precision=jax.lax.Precision.HIGHEST) / jnp.sqrt(
        jnp.float32(self.dim))
    g = scale * jnp.mean(jax.nn.sigmoid(s), axis=-1)                              # [B, N]
    return x * g.reshape(b, h, w, 1)
