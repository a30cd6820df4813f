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
