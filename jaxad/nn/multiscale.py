"""Multi-scale context blocks: an ASPP-style block of parallel dilated convolutions.

References:
  Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation"
  (DeepLabv3, arXiv:1706.05587), Sect. 3.3 (ASPP with image pooling); layout of
  torchvision's ``ASPP`` (each branch Conv-BN-ReLU, 1x1 projection Conv-BN-ReLU).
  Sun, Wang, Li, "RAMFAE", 2023, Sect. 3.1.1 and Fig. 3 (MFFE: 1x1 branch, dilated
  3x3 branches with rates 5, 7, 9, image pooling, 1x1 fusion), Fig. 7 (rates ablation).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxad.nn.layers import ConvBNReLU

__all__ = ["ASPP"]


class ASPP(nn.Module):
  """Atrous spatial pyramid pooling: 1x1 + dilated 3x3 branches + image pooling, fused by 1x1.

  Branches (each Conv-BN-ReLU, ``branch_features`` channels): a 1x1 conv; one 3x3 conv
  per rate with ``padding = dilation = rate`` (keeps H, W); global average pooling ->
  1x1 conv, broadcast back to H x W (the bilinear upsampling of a 1x1 map in the
  reference is a broadcast). The concatenation is projected by a 1x1 Conv-BN-ReLU to
  ``features`` channels. torchvision's dropout (0.5) after the projection is not used
  (RAMFAE does not mention it).

  Attributes:
    features: output channels.
    rates: dilation rates of the 3x3 branches (RAMFAE: 5, 7, 9).
    branch_features: channels per branch; ``None`` means ``features`` (RAMFAE keeps the
      input dimension in the 1x1 branch).
    image_pooling: include the global-average-pooling branch.

  Input ``[B, H, W, C_in]``; output ``[B, H, W, features]``.
  """
  features: int
  rates: Sequence[int] = (5, 7, 9)
  branch_features: int | None = None
  image_pooling: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    bf = self.features if self.branch_features is None else self.branch_features
    branches = [ConvBNReLU(bf, 1, 1, 0, name="branch_1x1")(x, train)]
    for i, rate in enumerate(self.rates):
      branches.append(ConvBNReLU(bf, 3, 1, int(rate), int(rate), name=f"branch_d{i}")(x, train))
    if self.image_pooling:
      pooled = jnp.mean(x, axis=(1, 2), keepdims=True)
      pooled = ConvBNReLU(bf, 1, 1, 0, name="branch_pool")(pooled, train)
      branches.append(jnp.broadcast_to(pooled, x.shape[:3] + (bf,)))
    y = jnp.concatenate(branches, axis=-1)
    return ConvBNReLU(self.features, 1, 1, 0, name="project")(y, train)
