"""Method config files: ml_collections ConfigDicts that round-trip to the frozen method Configs."""

from __future__ import annotations

import pytest
from ml_collections import config_dict

from experiments import configs
from experiments.configs import affgan as affgan_cli
from experiments.configs import conv_ae as conv_ae_cli
from experiments.configs import ramfae as ramfae_cli
from experiments.configs import scgan as scgan_cli
from experiments.configs import smcc as smcc_cli
from jaxad.models import affgan, conv_ae, ramfae, scgan, smcc


@pytest.mark.parametrize("module, method", [(conv_ae_cli, conv_ae), (ramfae_cli, ramfae),
                                            (smcc_cli, smcc), (scgan_cli, scgan),
                                            (affgan_cli, affgan)])
def test_config_files_name_their_method_and_build_its_config(module, method):
  cd = module.get_config()
  assert cd.method == method.NAME
  cfg = configs.to_method_config(method, cd)
  assert isinstance(cfg, method.Config)
  assert configs.method_config(method.NAME, cfg).to_dict() == cd.to_dict()


def test_placeholders_overrides_and_validation():
  cd = smcc_cli.get_config()
  assert cd.weights_path is None and cd.lo_margin is None
  cd.lo_margin = 0.5  # None fields are typed placeholders: a float can be set ...
  with pytest.raises(TypeError):
    cd.lo_margin = "wide"  # ... and a wrong type is refused
  cd.layers = ["stride8"]
  cfg = configs.to_method_config(smcc, cd)
  assert cfg.lo_margin == 0.5 and cfg.layers == ("stride8",)
  bad = conv_ae_cli.get_config()
  bad.channels = 2
  with pytest.raises(ValueError, match="channels"):  # the Config's own validation runs
    configs.to_method_config(conv_ae, bad)
  extra = conv_ae_cli.get_config()
  extra.size = 3
  with pytest.raises(ValueError, match=r"no field\(s\) \['size'\]"):
    configs.to_method_config(conv_ae, extra)
  mnist = configs.to_method_config(ramfae, ramfae_cli.get_config("mnist"))
  assert (mnist.image_size, mnist.channels, mnist.max_features) == (32, 1, 128)
  assert isinstance(config_dict.placeholder(int), config_dict.FieldReference)


def test_gan_variants():
  cfgs = {v: configs.to_method_config(scgan, scgan_cli.get_config(v)) for v in scgan_cli.VARIANTS}
  assert cfgs[""] == scgan.Config() and cfgs["cpu"].image_size == 64
  plain = cfgs["ganomaly"]
  assert (plain.use_mscam, plain.ssim_weight, plain.augmentation) == (False, 0.0, "none")
  for n in (1, 2, 3, 4):
    cfg = configs.to_method_config(affgan, affgan_cli.get_config(f"state{n}"))
    assert (cfg.fusion, cfg.augmentation) == affgan.STATES[n] and cfg.image_size == 64
  with pytest.raises(ValueError, match="variant"):
    affgan_cli.get_config("state5")
