"""Reusable Flax Linen building blocks (layers, multi-scale blocks, attention).

Each block lives once here and is used by every model that needs it:

* :mod:`jaxad.nn.conv`: ``conv2d`` / ``Conv2D`` (stride-1 conv, exact pruning of
  all-padding taps of dilated kernels on small maps).
* :mod:`jaxad.nn.layers`: ``ConvBNReLU``, ``EncoderBlock``, ``Upsample2x`` (transposed
  conv or the equivalent sub-pixel path), ``ResidualDecoderBlock``.
* :mod:`jaxad.nn.multiscale`: ``ASPP`` (dilated branches + image pooling).
* :mod:`jaxad.nn.attention`: ``CoordinateAttention`` (RAMFAE), ``CBAMVariant`` and
  ``QueryKeyAttention`` (DFDA-AD).
* :mod:`jaxad.nn.fusion`: ``MSCAM`` and ``AttentionalFeatureFusion`` (one set of branches,
  ``MultiScaleChannelWeights``).
* :mod:`jaxad.nn.gan`: GANomaly's ``DCGANEncoder`` / ``DCGANDecoder`` / ``Discriminator``,
  ``ConvBNLeakyReLU``, ``dcgan_widths``, ``dcgan_init``.
"""

from jaxad.nn.attention import CBAMVariant, CoordinateAttention, QueryKeyAttention, hard_swish
from jaxad.nn.conv import Conv2D, conv2d
from jaxad.nn.fusion import MSCAM, AttentionalFeatureFusion, MultiScaleChannelWeights
from jaxad.nn.gan import (ConvBNLeakyReLU, DCGANDecoder, DCGANEncoder, Discriminator, dcgan_init,
                          dcgan_widths)
from jaxad.nn.layers import (ConvBNReLU, EncoderBlock, ResidualDecoderBlock, Upsample2x,
                             batch_norm, check_upsample, conv_layer, default_upsample,
                             depth_to_space, resolve_upsample, transpose_kernel_to_subpixel)
from jaxad.nn.multiscale import ASPP

__all__ = [
    "ASPP", "AttentionalFeatureFusion", "CBAMVariant", "Conv2D", "ConvBNLeakyReLU", "ConvBNReLU",
    "CoordinateAttention", "DCGANDecoder", "DCGANEncoder", "Discriminator", "EncoderBlock", "MSCAM",
    "MultiScaleChannelWeights", "QueryKeyAttention", "ResidualDecoderBlock", "Upsample2x", "batch_norm", "conv2d",
    "check_upsample", "conv_layer", "dcgan_init", "dcgan_widths", "default_upsample",
    "depth_to_space", "hard_swish", "resolve_upsample", "transpose_kernel_to_subpixel",
]
