"""Tests of jaxad.train.compile (per-backend XLA compiler options of the jitted steps)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxad.train import compile as xla_compile


def test_no_options_off_cpu(monkeypatch):
  monkeypatch.delenv(xla_compile.ENV_VAR, raising=False)
  assert xla_compile.step_options("gpu") is None
  assert xla_compile.step_options("tpu") is None


def test_default_none_and_json(monkeypatch):
  monkeypatch.delenv(xla_compile.ENV_VAR, raising=False)
  assert xla_compile.step_options("cpu") == xla_compile.CPU_OPTIONS
  monkeypatch.setenv(xla_compile.ENV_VAR, "none")
  assert xla_compile.step_options("cpu") is None
  custom = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
  monkeypatch.setenv(xla_compile.ENV_VAR, json.dumps(custom))
  assert xla_compile.step_options("cpu") == custom
  # an explicit setting wins over the environment
  assert xla_compile.step_options("cpu", setting="none") is None
  assert xla_compile.step_options("cpu", setting="default") == xla_compile.CPU_OPTIONS


def test_json_booleans_stay_booleans(monkeypatch):
  # XLA parses bool options from Python bools only ("true" as a string is rejected).
  custom = {"xla_cpu_use_onednn": True, "xla_cpu_experimental_ynn_fusion_type": ""}
  monkeypatch.setenv(xla_compile.ENV_VAR, json.dumps(custom))
  assert xla_compile.step_options("cpu") == custom
  assert xla_compile.step_options("cpu")["xla_cpu_use_onednn"] is True


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", "fast"])
def test_malformed_env_is_an_error(monkeypatch, raw):
  monkeypatch.setenv(xla_compile.ENV_VAR, raw)
  with pytest.raises(ValueError, match=xla_compile.ENV_VAR):
    xla_compile.step_options("cpu")


def test_rejected_option_names_the_remedy(monkeypatch):
  monkeypatch.setenv(xla_compile.ENV_VAR,
                     json.dumps({"xla_cpu_experimental_ynn_fusion_type": "NOT_A_FUSION_TYPE"}))
  with pytest.raises(RuntimeError, match=f"{xla_compile.ENV_VAR}=none"):
    xla_compile.step_options("cpu")


def test_conv_gradients_unchanged_by_default_options(monkeypatch):
  """The options move convolutions to another kernel library: values agree to float32 rounding."""
  monkeypatch.delenv(xla_compile.ENV_VAR, raising=False)
  x = jax.random.normal(jax.random.key(0), (2, 12, 12, 8))
  w = jax.random.normal(jax.random.key(1), (3, 3, 8, 16)) * 0.2

  def loss(w, x):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(jnp.tanh(y) ** 2)

  f = jax.value_and_grad(loss, argnums=(0, 1))
  (v0, (gw0, gx0)) = jax.jit(f)(w, x)
  (v1, (gw1, gx1)) = xla_compile.jit(f)(w, x)
  np.testing.assert_allclose(v1, v0, rtol=1e-5)
  np.testing.assert_allclose(gw1, gw0, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(gx1, gx0, rtol=1e-4, atol=1e-5)
