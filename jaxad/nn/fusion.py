"""Multi-scale channel attention (MS-CAM) and attentional feature fusion (AFF).

Both blocks share one set of branches (:class:`MultiScaleChannelWeights`)::

  L(X) = BN(PWC(ReLU(BN(PWC(X)))))          local branch, C -> C/r -> C, per position
  G(X) = BN(PWC(ReLU(BN(PWC(GAP(X))))))     global branch, the same on the [B, 1, 1, C] mean
  w(X) = sigmoid(L(X) + G(X))               broadcast over H, W; values in (0, 1)

  MS-CAM(X)  = X * w(X)                      (SCGAN eq. 3; Dai et al. eq. 2)
  AFF(X, Y)  = X * w(X + Y) + Y * (1 - w(X + Y))   (AFF-GAN; Dai et al. eq. 4)

The point-wise convolutions are ``1x1`` convs; a conv followed by a BatchNorm has no bias (the
authors' ``MS_CAM`` code keeps PyTorch's default bias there, which the BN cancels exactly: same
function, and no zero-gradient parameter for Adam to push around on rounding noise). BatchNorm uses
PyTorch's defaults (:func:`jaxad.nn.layers.batch_norm`). The reduced width is ``max(1, C // r)``.

Paper reading (SCGAN eq. 1 writes ``BN(PWC2(ReLU(PWC1(GAP(X)))))`` without the inner BN; its
text says "Following the Batch Normalization (BN) layer and activation function, another
point-wise convolution" and Dai et al.'s code has the inner BN): the inner BN is on by default,
``inner_bn=False`` gives eq. 1 as printed.

References:
  Dai, Gieseke, Oehmcke, Wu, Barnard, "Attentional Feature Fusion", WACV 2021 (Fig. 2, eqs. 2-4).
  SCGAN (IEEE Access 2023), Sect. III-B, eqs. (1)-(3), r = 4.
  AFF-GAN (Sensors 2023), the fusion of the skip connections.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxad.nn.layers import batch_norm, conv1x1

__all__ = ["MultiScaleChannelWeights", "MSCAM", "AttentionalFeatureFusion"]


class MultiScaleChannelWeights(nn.Module):
  """The fusion weights ``w(X) = sigmoid(L(X) + G(X))`` of MS-CAM and AFF.

  Attributes:
    reduction: channel reduction ratio r (SCGAN: 4).
    inner_bn: BatchNorm between the two point-wise convolutions of each branch.
    use_local: include the local branch L (``False`` = SENet-like global-only ablation).
    use_global: include the global branch G.

  Input ``[B, H, W, C]``; output ``[B, H, W, C]`` weights in ``(0, 1)``.
  """
  reduction: int = 4
  inner_bn: bool = True
  use_local: bool = True
  use_global: bool = True

  def _branch(self, x: jax.Array, train: bool, prefix: str) -> jax.Array:
    c = x.shape[-1]
    # A bias right before a BatchNorm is cancelled by it (zero gradient); it is left out.
    h = conv1x1(max(1, c // self.reduction), use_bias=not self.inner_bn, name=f"{prefix}_pwc1")(x)
    if self.inner_bn:
      h = batch_norm(train, name=f"{prefix}_bn1")(h)
    h = conv1x1(c, use_bias=False, name=f"{prefix}_pwc2")(nn.relu(h))
    return batch_norm(train, name=f"{prefix}_bn2")(h)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if x.ndim != 4:
      raise ValueError(f"MultiScaleChannelWeights expects [B, H, W, C], got shape {x.shape}")
    if not isinstance(self.reduction, int) or self.reduction < 1:
      raise ValueError(f"reduction must be a positive int, got {self.reduction!r}")
    if not (self.use_local or self.use_global):
      raise ValueError("MultiScaleChannelWeights needs at least one of use_local / use_global")
    logits = jnp.zeros((), x.dtype)
    if self.use_local:
      logits = logits + self._branch(x, train, "local")
    if self.use_global:
      logits = logits + self._branch(jnp.mean(x, axis=(1, 2), keepdims=True), train, "global")
    return jax.nn.sigmoid(jnp.broadcast_to(logits, x.shape))


class MSCAM(nn.Module):
  """Multi-scale channel attention: ``X * w(X)`` (SCGAN eq. 3).

  Attributes: as :class:`MultiScaleChannelWeights` (the weights module is named ``weights``).

  Input ``[B, H, W, C]``; output the same shape.
  """
  reduction: int = 4
  inner_bn: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    w = MultiScaleChannelWeights(self.reduction, self.inner_bn, name="weights")(x, train)
    return x * w


class AttentionalFeatureFusion(nn.Module):
  """AFF: ``Z = X * w + Y * (1 - w)`` with ``w = w(X + Y)`` from the MS-CAM branches.

  Attributes: as :class:`MultiScaleChannelWeights` (the weights module is named ``weights``).

  Inputs ``x``, ``y``: ``[B, H, W, C]`` of the same shape (e.g. a U-Net's encoder skip and the
  decoder feature). Output the same shape.
  """
  reduction: int = 4
  inner_bn: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, y: jax.Array, train: bool = False) -> jax.Array:
    if x.shape != y.shape:
      raise ValueError(f"AttentionalFeatureFusion needs x and y of one shape, got {x.shape} "
                       f"and {y.shape}")
    w = MultiScaleChannelWeights(self.reduction, self.inner_bn, name="weights")(x + y, train)
    return x * w + y * (1.0 - w)
