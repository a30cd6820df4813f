"""--set parsing into frozen method configs."""

from __future__ import annotations

import pytest

from experiments import configs
from jaxad.models import conv_ae


def test_get_config_reads_the_method_file():
  cfg = configs.get_config("conv_ae", conv_ae)
  assert isinstance(cfg, conv_ae.Config) and cfg.image_size == 128


def test_overrides_are_typed_by_the_default():
  cfg = configs.apply_overrides(conv_ae.Config(), ["features=4,8", "batch_norm=false",
                                                   "learning_rate=2e-3", "image_size=16"])
  assert cfg.features == (4, 8) and cfg.batch_norm is False
  assert cfg.learning_rate == 0.002 and cfg.image_size == 16
  with pytest.raises(ValueError, match="expected a int"):
    configs.apply_overrides(conv_ae.Config(), ["image_size=big"])
  with pytest.raises(ValueError, match="no field"):
    configs.apply_overrides(conv_ae.Config(), ["size=3"])
  with pytest.raises(ValueError, match="field=value"):
    configs.apply_overrides(conv_ae.Config(), ["size"])
  with pytest.raises(ValueError, match="twice"):
    configs.parse_overrides(["a=1", "a=2"])
  with pytest.raises(ValueError, match="channels"):  # the Config's own validation still runs
    configs.apply_overrides(conv_ae.Config(), ["channels=2"])
