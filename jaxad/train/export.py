"""Export a trained run as one portable file: ``jax.export`` of predict + variables + threshold.

:func:`export_predict` turns ``method.predict(config, state, images)`` into a serialized
:class:`jax.export.Exported` with a symbolic batch dimension whose arguments are the state's
arrays that ``predict`` reads (found from its jaxpr; optimiser state, training-only parameters
and PRNG keys are left out) plus the images and ``calib = (threshold, scale)``; it returns
``(scores, maps, normalized, decisions)`` with the normalisation and decision rule of
:mod:`jaxad.train.calibrate`. :func:`export_run` does this for a workdir and writes the file
read by :func:`jaxad.deploy.load`.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxad import deploy
from jaxad.train import calibrate as calib_lib
from jaxad.train.loop import method_name, resolve_method
from jaxad.train.state import is_prng_key

__all__ = ["export_predict", "export_run"]

PyTree = Any


def _used_inputs(fun: Any, *args: Any) -> list[bool]:
  """Which flattened inputs of ``fun(*args)`` its jaxpr reads (top level)."""
  closed = jax.make_jaxpr(fun)(*args)
  index = {id(v): i for i, v in enumerate(closed.jaxpr.invars)}
  used = [False] * len(closed.jaxpr.invars)
  for eqn in closed.jaxpr.eqns:
    for v in eqn.invars:
      i = index.get(id(v))
      if i is not None:
        used[i] = True
  for v in closed.jaxpr.outvars:
    i = index.get(id(v))
    if i is not None:
      used[i] = True
  return used


def export_predict(method: str | ModuleType, config: Any, state: PyTree,
                   image_shape: tuple[int, int, int], *,
                   platforms: tuple[str, ...] | None = None
                   ) -> tuple[bytes, list[np.ndarray], tuple[str, ...]]:
  """Serializes ``method.predict`` extended by the decision and the normalisation.

  Args:
    method: registry name or module (must not define ``normalize``).
    config: the method's ``Config``.
    state: the trained state (any placement; gathered to the host).
    image_shape: ``(H, W, C)`` of the images the function takes.
    platforms: ``jax.export`` lowering platforms (``("cpu",)``, ``("cpu", "cuda")`` ...);
      ``None`` = the default backend.
  Returns:
    ``(serialized, variables, platforms)``: the bytes of the :class:`jax.export.Exported` of
    ``(variables, images [b, H, W, C] f32, calib [2] f32) -> (scores [b] f32, maps [b, H, W] f32,
    normalized [b] f32, decisions [b] bool)``, the list ``variables`` (numpy) to call it with and
    the platforms it was lowered for.
  Raises:
    NotImplementedError: the method normalises over a test set, or its scores are not ``[B]``.
  """
  method = resolve_method(method)
  name = method_name(method)
  if hasattr(method, "normalize"):
    raise NotImplementedError(f"{name} normalises scores over a whole test set (its `normalize` "
                              "hook); a per-image exported model is not defined for it")
  leaves, treedef = jax.tree.flatten(jax.device_get(state))
  keys = [is_prng_key(x) for x in leaves]
  arrays = [np.asarray(x) for x, k in zip(leaves, keys) if not k]

  def build(variables: list[Any], which: list[bool]) -> PyTree:
    it = iter(variables)
    out = []
    for x, k, w in zip(leaves, keys, which):
      out.append(next(it) if (not k and w) else x)
    return jax.tree.unflatten(treedef, out)

  def fun(variables: list[Any], images: jax.Array, calib: jax.Array, which: list[bool]) -> Any:
    scores, maps = method.predict(config, build(variables, which), images)
    if isinstance(scores, dict) or getattr(scores, "ndim", None) != 1:
      raise NotImplementedError(f"{name}.predict must return scores [B] to be exported, got "
                                f"{jax.tree.map(jnp.shape, scores)}")
    scores = scores.astype(jnp.float32)
    threshold, scale = calib[0], calib[1]
    normalized = jnp.clip(0.5 + (scores - threshold) / scale, 0.0, 1.0).astype(jnp.float32)
    return scores, maps.astype(jnp.float32), normalized, scores >= threshold

  h, w, c = (int(v) for v in image_shape)
  calib_spec = jax.ShapeDtypeStruct((2,), jnp.float32)
  probe = jax.ShapeDtypeStruct((1, h, w, c), jnp.float32)
  every = [not k for k in keys]
  used = _used_inputs(lambda v, x, cb: fun(v, x, cb, every), arrays, probe, calib_spec)
  used_vars = used[:len(arrays)]
  which, j = [], 0
  for k in keys:
    which.append(False if k else used_vars[j])
    j += 0 if k else 1
  kept = [a for a, u in zip(arrays, used_vars) if u]
  (b,) = jax.export.symbolic_shape("b")
  specs = ([jax.ShapeDtypeStruct(a.shape, a.dtype) for a in kept],
           jax.ShapeDtypeStruct((b, h, w, c), jnp.float32), calib_spec)
  exported = jax.export.export(jax.jit(lambda v, x, cb: fun(v, x, cb, which)),
                               platforms=platforms)(*specs)
  return exported.serialize(), kept, tuple(exported.platforms)


def export_run(workdir: str | Path, out: str | Path, *, step: int | None = None,
               platforms: tuple[str, ...] | None = None) -> tuple[Path, dict[str, Any]]:
  """Exports a trained workdir (``run.json``, a checkpoint, ``calibration.json``) to ``out``.

  Args:
    workdir: a workdir of ``experiments/train.py`` / :func:`jaxad.train.loop.fit`.
    out: the file to write (``.jaxad``).
    step: checkpoint step (latest when ``None``).
    platforms: lowering platforms (default: the current backend).
  Returns:
    ``(path, metadata)``. Without ``calibration.json`` the file has no threshold (the loader then
    returns scores and maps only, unless given a threshold).
  """
  from jaxad.train import loop  # restores with the method (Flax, Orbax): only here, not in deploy
  workdir = Path(workdir)
  restored = loop.restore(workdir, step=step)
  info = restored.info
  calibration = calib_lib.read_calibration(workdir)
  image_shape = tuple(int(v) for v in info["image_shape"])
  serialized, variables, lowered_for = export_predict(restored.method, restored.config, restored.state,
                                         image_shape, platforms=platforms)
  meta = {
      "method": info["method"], "config": info["config"],
      "step": int(np.asarray(jax.device_get(restored.state.step))),
      "image_shape": list(image_shape),
      "preprocessing": deploy.preprocessing_from_run_info(info),
      "calibration": None if calibration is None else calibration.to_dict(),
      "outputs": {"scores": "[b] float32 raw image scores", "maps": "[b, H, W] float32 raw maps",
                  "normalized": "[b] float32 in [0, 1], threshold -> 0.5",
                  "decisions": "[b] bool, scores >= threshold"},
      "platforms": list(lowered_for),
      "run": {k: info.get(k) for k in ("dataset", "data_dir", "data_kwargs", "seed", "val_fraction")},
      "jax_version": jax.__version__,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "num_variables": len(variables),
      "variable_bytes": int(sum(v.nbytes for v in variables)),
  }
  path = deploy.write(out, serialized, variables, meta)
  return path, meta
