"""Reusable Flax Linen building blocks (layers, multi-scale blocks, attention).

Each block lives once here and is used by every model that needs it:

* :mod:`jaxad.nn.layers`: ``ConvBNReLU``, ``EncoderBlock``, ``Upsample2x`` (transposed
  conv or the equivalent sub-pixel path), ``ResidualDecoderBlock``.
* :mod:`jaxad.nn.multiscale`: ``ASPP`` (dilated branches + image pooling).
* :mod:`jaxad.nn.attention`: ``CoordinateAttention``.
"""

from jaxad.nn.attention import CoordinateAttention, hard_swish
from jaxad.nn.layers import (ConvBNReLU, EncoderBlock, ResidualDecoderBlock, Upsample2x,
                             batch_norm, default_upsample, depth_to_space, resolve_upsample,
                             transpose_kernel_to_subpixel)
from jaxad.nn.multiscale import ASPP

__all__ = [
    "ASPP", "ConvBNReLU", "CoordinateAttention", "EncoderBlock", "ResidualDecoderBlock",
    "Upsample2x", "batch_norm", "default_upsample", "depth_to_space", "hard_swish",
    "resolve_upsample", "transpose_kernel_to_subpixel",
]
