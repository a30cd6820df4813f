"""The nn tests' PyTorch references: ``experiments/torch_blocks.py``, on one torch thread."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

_EXPERIMENTS = str(Path(__file__).resolve().parents[2] / "experiments")
if _EXPERIMENTS not in sys.path:
  sys.path.insert(0, _EXPERIMENTS)

from torch_blocks import (CBR, HSwish, TorchAFF, TorchASPP, TorchCoordAtt,  # noqa: E402
                          TorchDCGANDecoder, TorchDCGANEncoder, TorchDiscriminator, TorchMSCAM,
                          TorchSCGANGenerator, bn_stats, copy_bn, copy_conv, copy_convt,
                          nchw_to_nhwc, nhwc_to_nchw, t)

torch.set_num_threads(1)

__all__ = ["CBR", "HSwish", "TorchAFF", "TorchASPP", "TorchCoordAtt", "TorchDCGANDecoder",
           "TorchDCGANEncoder", "TorchDiscriminator", "TorchMSCAM", "TorchSCGANGenerator", "bn_stats",
           "copy_bn", "copy_conv", "copy_convt", "nchw_to_nhwc", "nhwc_to_nchw", "t"]
