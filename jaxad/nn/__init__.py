"""Reusable Flax Linen building blocks (layers, multi-scale blocks, attention).

Each block lives once here and is used by every model that needs it:

* :mod:`jaxad.nn.conv`: ``conv2d`` / ``Conv2D`` (stride-1 conv, exact pruning of
  all-padding taps of dilated kernels on small maps).
* :mod:`jaxad.nn.layers`: ``ConvBNReLU``, ``EncoderBlock``, ``Upsample2x`` (transposed
  conv or the equivalent sub-pixel path), ``ResidualDecoderBlock``.
* :mod:`jaxad.nn.multiscale`: ``ASPP`` (dilated branches + image pooling).
* :mod:`jaxad.nn.attention`: ``CoordinateAttention``.
"""

from jaxad.nn.attention import CoordinateAttention, hard_swish
from jaxad.nn.conv import Conv2D, conv2d
from jaxad.nn.layers import (ConvBNReLU, EncoderBlock, ResidualDecoderBlock, Upsample2x,
                             batch_norm, default_upsample, depth_to_space, resolve_upsample,
                             transpose_kernel_to_subpixel)
from jaxad.nn.multiscale import ASPP

__all__ = [
    "ASPP", "Conv2D", "ConvBNReLU", "CoordinateAttention", "EncoderBlock", "ResidualDecoderBlock",
    "Upsample2x", "batch_norm", "conv2d", "default_upsample", "depth_to_space", "hard_swish",
    "resolve_upsample", "transpose_kernel_to_subpixel",
]
