"""PyTorch CPU reference blocks and Flax -> PyTorch weight copying.

The independent references of ``tests/nn`` (layer-by-layer comparisons) and the building
blocks of ``experiments/benchmark_ramfae.py``'s PyTorch RAMFAE (training throughput and
whole-network comparison in ``tests/models/test_ramfae.py``). Written from the papers /
the authors' reference code independently of ``jaxad.nn``; only the parameter layouts
are shared (Flax HWIO kernels, PyTorch OIHW / IOHW). Importing this module does not
change torch's thread count (the tests set it themselves).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn as tnn

def t(x) -> torch.Tensor:
  return torch.from_numpy(np.asarray(x, dtype=np.float32).copy())


def nhwc_to_nchw(x) -> torch.Tensor:
  return t(np.asarray(x).transpose(0, 3, 1, 2))


def nchw_to_nhwc(x: torch.Tensor) -> np.ndarray:
  return x.detach().numpy().transpose(0, 2, 3, 1)


def copy_conv(conv: tnn.Conv2d, p: dict) -> None:
  conv.weight.data = t(np.asarray(p["kernel"]).transpose(3, 2, 0, 1))
  if conv.bias is not None:
    conv.bias.data = t(p["bias"])


def copy_convt(conv: tnn.ConvTranspose2d, p: dict) -> None:
  conv.weight.data = t(np.asarray(p["kernel"]).transpose(2, 3, 0, 1))
  if conv.bias is not None:
    conv.bias.data = t(p["bias"])


def copy_bn(bn: tnn.BatchNorm2d, p: dict, s: dict) -> None:
  bn.weight.data = t(p["scale"])
  bn.bias.data = t(p["bias"])
  bn.running_mean.data = t(s["mean"])
  bn.running_var.data = t(s["var"])


def bn_stats(bn: tnn.BatchNorm2d) -> dict:
  return {"mean": bn.running_mean.numpy(), "var": bn.running_var.numpy()}


def ssim_map(x: torch.Tensor, y: torch.Tensor, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
  """SSIM map (Gaussian window 11 / 1.5, reflect padding, data range 1) of NCHW images."""
  ch = x.shape[1]
  g = torch.exp(-(torch.arange(size, dtype=torch.float32) - size // 2) ** 2 / (2 * sigma ** 2))
  g = (g / g.sum()).to(x)
  kh, kw = g.view(1, 1, size, 1).repeat(ch, 1, 1, 1), g.view(1, 1, 1, size).repeat(ch, 1, 1, 1)

  def filt(a):
    a = tnn.functional.pad(a, (size // 2,) * 4, mode="reflect")
    return tnn.functional.conv2d(tnn.functional.conv2d(a, kh, groups=ch), kw, groups=ch)

  c1, c2 = 0.01 ** 2, 0.03 ** 2
  mx, my = filt(x), filt(y)
  sxx, syy, sxy = filt(x * x) - mx ** 2, filt(y * y) - my ** 2, filt(x * y) - mx * my
  return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))


class CBR(tnn.Sequential):
  def __init__(self, cin, cout, k=3, s=1, p=1, d=1):
    super().__init__(tnn.Conv2d(cin, cout, k, s, p, dilation=d, bias=False), tnn.BatchNorm2d(cout),
                     tnn.ReLU(inplace=True))

  def load(self, p, s):
    copy_conv(self[0], p["conv"])
    copy_bn(self[1], p["bn"], s["bn"])


class TorchASPP(tnn.Module):
  """torchvision-style ASPP without dropout."""

  def __init__(self, cin, cout, rates=(5, 7, 9)):
    super().__init__()
    self.b0 = CBR(cin, cout, 1, 1, 0)
    self.bd = tnn.ModuleList([CBR(cin, cout, 3, 1, r, r) for r in rates])
    self.pool = CBR(cin, cout, 1, 1, 0)
    self.project = CBR(cout * (2 + len(rates)), cout, 1, 1, 0)

  def forward(self, x):
    outs = [self.b0(x)] + [b(x) for b in self.bd]
    pooled = self.pool(tnn.functional.adaptive_avg_pool2d(x, 1))
    outs.append(tnn.functional.interpolate(pooled, size=x.shape[-2:], mode="bilinear",
                                           align_corners=False))
    return self.project(torch.cat(outs, 1))

  def load(self, p, s):
    self.b0.load(p["branch_1x1"], s["branch_1x1"])
    for i, b in enumerate(self.bd):
      b.load(p[f"branch_d{i}"], s[f"branch_d{i}"])
    self.pool.load(p["branch_pool"], s["branch_pool"])
    self.project.load(p["project"], s["project"])


class HSwish(tnn.Module):
  def forward(self, x):
    return x * tnn.functional.relu6(x + 3) / 6


class TorchCoordAtt(tnn.Module):
  """The authors' CoordAtt (github.com/houqb/CoordAttention, coordatt.py)."""

  def __init__(self, inp, reduction=32):
    super().__init__()
    mip = max(8, inp // reduction)
    self.conv1 = tnn.Conv2d(inp, mip, 1)
    self.bn1 = tnn.BatchNorm2d(mip)
    self.act = HSwish()
    self.conv_h = tnn.Conv2d(mip, inp, 1)
    self.conv_w = tnn.Conv2d(mip, inp, 1)

  def forward(self, x):
    n, c, h, w = x.shape
    x_h = tnn.functional.adaptive_avg_pool2d(x, (h, 1))
    x_w = tnn.functional.adaptive_avg_pool2d(x, (1, w)).permute(0, 1, 3, 2)
    y = self.act(self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2))))
    x_h, x_w = torch.split(y, [h, w], dim=2)
    a_h = self.conv_h(x_h).sigmoid()
    a_w = self.conv_w(x_w.permute(0, 1, 3, 2)).sigmoid()
    return x * a_w * a_h

  def load(self, p, s):
    copy_conv(self.conv1, p["conv1"])
    copy_bn(self.bn1, p["bn1"], s["bn1"])
    copy_conv(self.conv_h, p["conv_h"])
    copy_conv(self.conv_w, p["conv_w"])


def _pwc_bn_branch(channels: int, reduction: int, pool: bool) -> tnn.Sequential:
  inter = max(1, channels // reduction)
  layers = [tnn.AdaptiveAvgPool2d(1)] if pool else []
  # Dai et al. keep the conv biases; each is followed by a BN that cancels it (jaxad omits them).
  layers += [tnn.Conv2d(channels, inter, 1, bias=False), tnn.BatchNorm2d(inter), tnn.ReLU(inplace=True),
             tnn.Conv2d(inter, channels, 1, bias=False), tnn.BatchNorm2d(channels)]
  return tnn.Sequential(*layers)


def _load_branch(seq: tnn.Sequential, p: dict, s: dict, prefix: str) -> None:
  off = 1 if isinstance(seq[0], tnn.AdaptiveAvgPool2d) else 0
  copy_conv(seq[off], p[f"{prefix}_pwc1"])
  copy_bn(seq[off + 1], p[f"{prefix}_bn1"], s[f"{prefix}_bn1"])
  copy_conv(seq[off + 3], p[f"{prefix}_pwc2"])
  copy_bn(seq[off + 4], p[f"{prefix}_bn2"], s[f"{prefix}_bn2"])


class TorchMSCAM(tnn.Module):
  """MS-CAM as in Dai et al.'s ``MS_CAM`` (github.com/YimianDai/open-aff): x * sigmoid(L(x) + G(x))."""

  def __init__(self, channels, r=4):
    super().__init__()
    self.local_att = _pwc_bn_branch(channels, r, pool=False)
    self.global_att = _pwc_bn_branch(channels, r, pool=True)

  def weights(self, x):
    return torch.sigmoid(self.local_att(x) + self.global_att(x))

  def forward(self, x):
    return x * self.weights(x)

  def load(self, p, s):
    """``p``, ``s``: the Flax MSCAM's params / batch_stats (holding ``weights``)."""
    _load_branch(self.local_att, p["weights"], s["weights"], "local")
    _load_branch(self.global_att, p["weights"], s["weights"], "global")


class TorchAFF(TorchMSCAM):
  """AFF-GAN's fusion ``x * w + y * (1 - w)``, ``w`` from MS-CAM's branches on ``x + y``.

  (Dai et al.'s ``AFF`` code multiplies both terms by 2; the AFF-GAN paper's formula has no factor.)
  """

  def forward(self, x, y):
    w = self.weights(x + y)
    return x * w + y * (1 - w)


class TorchDCGANEncoder(tnn.Module):
  """GANomaly encoder (``networks.py``): conv 4/2/1 + LeakyReLU, conv-BN-LeakyReLU blocks to 4x4,
  a 4x4 valid conv to the latent; optional MS-CAM after every feature-map block (SCGAN's E1).
  Returns ``(latent [B, L], features [B, C, 4, 4])``."""

  def __init__(self, channels, widths, latent, attention=False, r=4):
    super().__init__()
    self.blocks = tnn.ModuleList()
    self.attn = tnn.ModuleList() if attention else None
    cin = channels
    for i, c in enumerate(widths):
      layers = [tnn.Conv2d(cin, c, 4, 2, 1, bias=False)]
      if i > 0:
        layers.append(tnn.BatchNorm2d(c))
      layers.append(tnn.LeakyReLU(0.2, inplace=True))
      self.blocks.append(tnn.Sequential(*layers))
      if attention:
        self.attn.append(TorchMSCAM(c, r))
      cin = c
    self.latent = tnn.Conv2d(cin, latent, 4, 1, 0, bias=False)

  def forward(self, x):
    for i, block in enumerate(self.blocks):
      x = block(x)
      if self.attn is not None:
        x = self.attn[i](x)
    return self.latent(x).flatten(1), x

  def load(self, p, s):
    for i, block in enumerate(self.blocks):
      copy_conv(block[0], p[f"block{i}"]["conv"])
      if i > 0:
        copy_bn(block[1], p[f"block{i}"]["bn"], s[f"block{i}"]["bn"])
      if self.attn is not None:
        self.attn[i].load(p[f"mscam{i}"], s[f"mscam{i}"])
    copy_conv(self.latent, p["latent"])


class TorchDCGANDecoder(tnn.Module):
  """GANomaly decoder: ConvT 4/1/0 from the latent, ConvT 4/2/1 + BN + ReLU blocks, ConvT to the
  image channels and Tanh."""

  def __init__(self, channels, widths, latent):
    super().__init__()
    rev = list(reversed(widths))
    layers = [tnn.ConvTranspose2d(latent, rev[0], 4, 1, 0, bias=False), tnn.BatchNorm2d(rev[0]),
              tnn.ReLU(inplace=True)]
    for cin, cout in zip(rev[:-1], rev[1:]):
      layers += [tnn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), tnn.BatchNorm2d(cout),
                 tnn.ReLU(inplace=True)]
    layers += [tnn.ConvTranspose2d(rev[-1], channels, 4, 2, 1, bias=False), tnn.Tanh()]
    self.net = tnn.Sequential(*layers)

  def forward(self, z):
    return self.net(z[:, :, None, None])

  def load(self, p, s):
    convs = [m for m in self.net if isinstance(m, tnn.ConvTranspose2d)]
    bns = [m for m in self.net if isinstance(m, tnn.BatchNorm2d)]
    names = ["latent"] + [f"up{i}" for i in range(len(convs) - 2)] + ["out"]
    for conv, name in zip(convs, names):
      copy_convt(conv, p[name])
    for bn, name in zip(bns, names[:-1]):
      copy_bn(bn, p[f"{name}_bn"], s[f"{name}_bn"])


class TorchSCGANGenerator(tnn.Module):
  """E1 (with MS-CAM) -> decoder -> E2, images in [0, 1] (fed as 2x - 1), as ``jaxad.models.scgan``."""

  def __init__(self, channels, widths, latent, mscam=True, r=4):
    super().__init__()
    self.e1 = TorchDCGANEncoder(channels, widths, latent, attention=mscam, r=r)
    self.dec = TorchDCGANDecoder(channels, widths, latent)
    self.e2 = TorchDCGANEncoder(channels, widths, latent)

  def forward(self, x):
    z1, _ = self.e1(2 * x - 1)
    y = self.dec(z1)
    z2, _ = self.e2(y)
    return (y + 1) / 2, z1, z2

  def load(self, p, s):
    self.e1.load(p["encoder1"], s["encoder1"])
    self.dec.load(p["decoder"], s["decoder"])
    self.e2.load(p["encoder2"], s.get("encoder2", {}))


class TorchDiscriminator(tnn.Module):
  """GANomaly discriminator: the encoder with a 1-unit latent; returns ``(logits [B], features)``."""

  def __init__(self, channels, widths):
    super().__init__()
    self.enc = TorchDCGANEncoder(channels, widths, 1)

  def forward(self, x):
    logit, feat = self.enc(x)
    return logit[:, 0], feat

  def load(self, p, s):
    self.enc.load(p["encoder"], s["encoder"])


class TorchSkipUNet(tnn.Module):
  """Skip-GANomaly / pix2pix U-Net with fused skips (``aff`` / ``concat`` / ``none``), as
  ``jaxad.models.affgan.SkipUNet``; images in [0, 1] (fed as 2x - 1), output in [0, 1]."""

  def __init__(self, channels, widths, fusion="aff", r=4):
    super().__init__()
    self.fusion, n = fusion, len(widths)
    self.down = tnn.ModuleList()
    self.down_bn = tnn.ModuleDict()
    cin = channels
    for i, c in enumerate(widths):
      self.down.append(tnn.Conv2d(cin, c, 4, 2, 1, bias=False))
      if 0 < i < n - 1:
        self.down_bn[str(i)] = tnn.BatchNorm2d(c)
      cin = c
    self.up = tnn.ModuleDict()
    self.up_bn = tnn.ModuleDict()
    self.aff = tnn.ModuleDict()
    for i in range(n - 2, -1, -1):
      self.up[str(i + 1)] = tnn.ConvTranspose2d(cin, widths[i], 4, 2, 1, bias=False)
      self.up_bn[str(i + 1)] = tnn.BatchNorm2d(widths[i])
      if fusion == "aff":
        self.aff[str(i)] = TorchAFF(widths[i], r)
      cin = 2 * widths[i] if fusion == "concat" else widths[i]
    self.up0 = tnn.ConvTranspose2d(cin, channels, 4, 2, 1)

  def forward(self, x):
    h, skips, n = 2 * x - 1, [], len(self.down)
    for i, conv in enumerate(self.down):
      if i > 0:
        h = tnn.functional.leaky_relu(h, 0.2)
      h = conv(h)
      if str(i) in self.down_bn:
        h = self.down_bn[str(i)](h)
      skips.append(h)
    for i in range(n - 2, -1, -1):
      h = self.up_bn[str(i + 1)](self.up[str(i + 1)](torch.relu(h)))
      if self.fusion == "aff":
        h = self.aff[str(i)](skips[i], h)
      elif self.fusion == "concat":
        h = torch.cat([skips[i], h], 1)
    return (torch.tanh(self.up0(torch.relu(h))) + 1) / 2

  def load(self, p, s):
    for i, conv in enumerate(self.down):
      copy_conv(conv, p[f"down{i}"])
      if str(i) in self.down_bn:
        copy_bn(self.down_bn[str(i)], p[f"down{i}_bn"], s[f"down{i}_bn"])
    for k, conv in self.up.items():
      copy_convt(conv, p[f"up{k}"])
      copy_bn(self.up_bn[k], p[f"up{k}_bn"], s[f"up{k}_bn"])
    for k, aff in self.aff.items():
      aff.load(p[f"aff{k}"], s[f"aff{k}"])
    copy_convt(self.up0, p["up0"])
