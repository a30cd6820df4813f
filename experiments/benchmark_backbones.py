"""Backbone throughput, jaxad vs the same models in PyTorch CPU, forward and forward+backward.

One run times, per backbone, at the given batch and size (median images/s of ``--iters`` runs
after one warm-up; the runs of jaxad and PyTorch alternate, ABBA, so both see the same load):

* forward: jaxad ``extract_features`` up to the deepest feature layer (``jax.jit``, float32,
  NHWC) vs PyTorch ``eval()`` + ``no_grad`` (NCHW) on the reference ``torch.nn`` definitions
  of the tests (``tests/backbones/backbone_torch_ref.py``, loaded with the same state dict);
* forward+backward: the gradient of the mean of that feature map w.r.t. all parameters with
  frozen BatchNorm (running statistics, as SMCC's self-update step trains the backbone), jaxad
  compiled like jaxad's training steps (``jaxad.train.compile.jit``) vs PyTorch ``eval()`` +
  ``backward()``.

Prints a Markdown table with the ratios (jaxad / PyTorch, > 1 means jaxad is faster). Real
ImageNet weights are used where installed; throughput does not depend on the weight values.
``--conv_method`` selects the mobile backbones' convolution path (``jaxad.backbones.convs``;
``auto`` = the backend's default); ``--native`` adds the ``native`` path's jaxad columns for
the mobile backbones (slow on CPU: that is what ``unrolled`` replaces).

  .venv/bin/python experiments/benchmark_backbones.py --batch=16 --iters=5
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import time

from absl import app, flags

import jax
import jax.numpy as jnp
import numpy as np

from jaxad import backbones as bb
from jaxad.backbones import convs
from jaxad.train import compile as xla_compile

_MOBILE = ("mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")

_NAMES = flags.DEFINE_list("names", ["mobilenet_v2", "efficientnet_lite0", "resnet18"],
                           f"Backbones to benchmark (any of {list(bb.NAMES)}).")
_BATCH = flags.DEFINE_integer("batch", 16, "Images per pass.")
_SIZE = flags.DEFINE_integer("size", 224, "Square input side.")
_ITERS = flags.DEFINE_integer("iters", 5, "Timed passes per measurement (after 1 warm-up).")
_THREADS = flags.DEFINE_integer("torch_threads", os.cpu_count() or 1, "torch.set_num_threads.")
_TORCH = flags.DEFINE_bool("torch", True, "Also time PyTorch CPU (needs torch).")
_BACKWARD = flags.DEFINE_bool("backward", True, "Also time forward+backward.")
_CONV = flags.DEFINE_enum("conv_method", "auto", ["auto", *convs.CONV_METHODS],
                          "Convolution path of the mobile backbones.")
_NATIVE = flags.DEFINE_bool("native", False,
                            "Also time the mobile backbones' 'native' conv path in jaxad.")


def _time(fns: dict, iters: int) -> dict:
  """Median seconds per call of each function, after one warm-up call each (JAX compiles).

  The timed calls are interleaved (ABBA order), so that every implementation sees the same
  background load.
  """
  for fn in fns.values():
    fn()
  names, times = list(fns), {k: [] for k in fns}
  for i in range(iters):
    for name in (names if i % 2 == 0 else names[::-1]):
      t0 = time.perf_counter()
      fns[name]()
      times[name].append(time.perf_counter() - t0)
  return {k: float(np.median(v)) for k, v in times.items()}


def _jax_steps(name: str, method: str, variables, images: np.ndarray, layer: str):
  """(forward, forward+backward) callables of jaxad that block until the result is ready."""
  kw = {"conv_method": method} if name in _MOBILE else {}
  module = bb.create(name, num_classes=_num_classes(variables, name), **kw)
  x = jnp.asarray(images)
  fwd = jax.jit(lambda v, x: bb.extract_features(module, v, x, (layer,))[layer])

  def loss(params, stats, x):
    out = bb.extract_features(module, {"params": params, "batch_stats": stats}, x, (layer,),
                              train=True)
    return jnp.mean(out[layer])

  grad = xla_compile.jit(jax.grad(loss))
  return (lambda: fwd(variables, x).block_until_ready(),
          lambda: jax.block_until_ready(grad(variables["params"], variables["batch_stats"], x)))


def _num_classes(variables, name: str) -> int:
  head = {"densenet121": "classifier", "mobilenet_v2": "classifier_1"}.get(name, "fc")
  return int(variables["params"][head]["kernel"].shape[1])


def _torch_steps(torch, ref, name: str, source: str, images: np.ndarray, layer: str, mean, std):
  """(forward, forward+backward) callables of the PyTorch reference model."""
  model = ref.build(name)
  if source == "ImageNet":
    model.load_state_dict(torch.load(bb.weights_path(name), map_location="cpu", weights_only=True))
  model.eval()  # frozen BatchNorm in both timings
  xt = torch.from_numpy(((images - np.asarray(mean, np.float32)) / np.asarray(std, np.float32))
                        .transpose(0, 3, 1, 2).copy())

  def fwd():
    with torch.no_grad():
      model(xt)

  def fwd_bwd():
    model.zero_grad(set_to_none=True)
    feats = {}
    model(xt, feats)
    feats[layer].mean().backward()

  return fwd, fwd_bwd


def main(argv):
  del argv
  torch = ref = None
  if _TORCH.value:
    import torch  # noqa: F811  (reference only)
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "backbones"))
    import backbone_torch_ref as ref  # noqa: F811
    torch.set_num_threads(_THREADS.value)
  b, s, iters, backward = _BATCH.value, _SIZE.value, _ITERS.value, _BACKWARD.value
  images = np.random.default_rng(0).uniform(size=(b, s, s, 3)).astype(np.float32)
  method = convs.resolve_conv_method(_CONV.value)
  nan = float("nan")
  rows = []
  for name in _NAMES.value:
    if name not in bb.NAMES:
      raise app.UsageError(f"--names: {name!r} is not one of {list(bb.NAMES)}")
    try:
      variables, source = bb.load_pretrained(name), "ImageNet"
    except FileNotFoundError:
      variables, source = bb.init_random(name, jax.random.key(0), 64), "random"
    layer = list(bb.FEATURE_LAYERS[name])[-1]
    mean, std = bb.input_normalization(name)
    path = method if name in _MOBILE else "native"
    steps = {"jaxad": _jax_steps(name, method, variables, images, layer)}
    if _NATIVE.value and name in _MOBILE and method != "native":
      steps["native"] = _jax_steps(name, "native", variables, images, layer)
    if torch is not None:
      steps["torch"] = _torch_steps(torch, ref, name, source, images, layer, mean, std)
    rate = {k: nan for k in ("jaxad", "native", "torch")}
    fwd = {k: b / t for k, t in _time({k: v[0] for k, v in steps.items()}, iters).items()}
    bwd = dict(rate)
    if backward:
      bwd.update({k: b / t for k, t in _time({k: v[1] for k, v in steps.items()}, iters).items()})
    fwd = {**rate, **fwd}
    rows.append((name, source, layer, path, fwd["jaxad"], fwd["torch"], bwd["jaxad"],
                 bwd["torch"], fwd["native"], bwd["native"]))
    print(f"done {name}", file=sys.stderr, flush=True)
  print(f"\n{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{platform.machine()} {os.cpu_count()} CPUs, jax {jax.__version__}, "
        f"torch {torch.__version__ if torch else '-'} ({_THREADS.value} threads), "
        f"batch {b}, {s}x{s}, median of {iters}; images/s (higher is better); "
        "backward = gradient of the feature mean w.r.t. all parameters, frozen BatchNorm\n")
  head = ("| backbone | weights | up to | jaxad convs | fwd jaxad | fwd PyTorch | fwd ratio "
          "| fwd+bwd jaxad | fwd+bwd PyTorch | fwd+bwd ratio |")
  extra = _NATIVE.value and method != "native"
  if extra:
    head += " fwd jaxad native | fwd+bwd jaxad native |"
  print(head)
  print("| --- | --- | --- | --- |" + " ---: |" * (6 + 2 * extra))
  for name, source, layer, path, jf, tf, jb, tb, nf, nb in rows:
    line = (f"| {name} | {source} | {layer} | {path} | {jf:.1f} | {tf:.1f} | {jf / tf:.2f}x "
            f"| {jb:.1f} | {tb:.1f} | {jb / tb:.2f}x |")
    if extra:
      line += f" {nf:.1f} | {nb:.1f} |"
    print(line)


if __name__ == "__main__":
  app.run(main)
