"""Benchmark of jaxad.cluster against scikit-learn, faiss-cpu, PyTorch and NumPy loops.

Each (task, implementation) runs once in its own subprocess, so the reported peak memory
(``VmHWM - VmRSS`` after the data is created, i.e. the extra resident memory of the method) is
not polluted by other runs. JAX is reported twice: ``cold`` (first call, includes compilation)
and ``warm`` (second call, same shapes). Prints a Markdown table.

Example (one task and size per invocation; run it on an otherwise idle machine):
  python experiments/benchmark_cluster.py --task=knn --n=20000 --d=512
Real patch features (MobileNetV2 on the first 128 MVTec AD bottle training images):
  python experiments/benchmark_cluster.py --task=features --mvtec_dir=path/to/mvtec_ad \
      --npy=runs/bench/bottle_feats.npy
  python experiments/benchmark_cluster.py --task=greedy --n=100000 --d=1728 --data=npy \
      --npy=runs/bench/bottle_feats.npy
Tasks: kmeans (k=--k_kmeans, vs sklearn KMeans n_init=1), gmm (k=--k_gmm, --covariance, vs sklearn
GaussianMixture; --gmm_max_iter/--gmm_tol/--gmm_init=shared/--fit_seeds for equal-start and
fixed-iteration comparisons), greedy (m = --ratio * n, vs an anomalib-style torch loop and a NumPy loop),
knn (--queries queries, k=--k_knn, vs faiss IndexFlatL2 and blocked torch.cdist + topk).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_enum("task", "knn", ["kmeans", "gmm", "greedy", "knn", "features"],
                  "What to benchmark; 'features' only writes real patch features to --npy.")
flags.DEFINE_integer("n", 20000, "Number of feature vectors (bank size for knn).")
flags.DEFINE_integer("d", 512, "Feature dimension.")
flags.DEFINE_integer("k_kmeans", 32, "Clusters for k-means.")
flags.DEFINE_integer("k_gmm", 10, "Components for the GMM (SMCC: 10).")
flags.DEFINE_enum("covariance", "diag", ["diag", "full"], "GMM covariance type.")
flags.DEFINE_float("ratio", 0.1, "Greedy coreset size as a fraction of n.")
flags.DEFINE_integer("projection_dim", 128, "Random projection for the greedy coreset.")
flags.DEFINE_integer("queries", 4096, "kNN queries.")
flags.DEFINE_integer("k_knn", 1, "kNN neighbours.")
flags.DEFINE_integer("ref_steps", 0, "If > 0, run the torch/NumPy greedy loops for only this many "
                     "steps and extrapolate the time to m steps (stated in the table).")
flags.DEFINE_list("impls", [], "Subset of implementations (default: all for the task).")
flags.DEFINE_string("impl", "", "Internal: run one implementation in this process.")
flags.DEFINE_string("out", "", "Internal: where the child writes its arrays (.npz).")
flags.DEFINE_integer("seed", 0, "Data seed.")
flags.DEFINE_enum("data", "mix", ["mix", "gauss", "npy"], "mix: 64 anisotropic blobs (default); "
                  "gauss: i.i.d. N(0, 1) (nothing to prune); npy: the first --n rows of --npy.")
flags.DEFINE_string("npy", None, "Feature file (.npy) read by --data=npy and written by --task=features.")
flags.DEFINE_string("mvtec_dir", None, "MVTec AD root (folder of category folders) for --task=features.")
flags.DEFINE_integer("repeats", 1, "Timed runs per implementation (the minimum is reported).")
flags.DEFINE_integer("gmm_max_iter", 100, "GMM: maximum EM iterations (both libraries).")
flags.DEFINE_float("gmm_tol", 1e-3, "GMM: tolerance on the change of the mean log-likelihood (both "
                   "libraries); 0 runs exactly --gmm_max_iter iterations.")
flags.DEFINE_enum("gmm_init", "kmeans", ["kmeans", "shared", "shared_diag"],
                  "GMM start. kmeans: each library's own k-means init (random_state / key = fit "
                  "seed). shared: both start from the same parameters (scikit-learn via means_init/"
                  "weights_init/precisions_init, jaxad via init=): weights, means and covariances "
                  "(+ reg_covar) of the clusters of one jaxad k-means run (key = fit seed), "
                  "computed in float64 NumPy before the timer; shared_diag: the same but the "
                  "covariances are diagonal (cheap for --covariance=full at high D).")
flags.DEFINE_float("reg_covar", 1e-6, "GMM: added to the covariance diagonals (both libraries; "
                   "raise it, e.g. 1e-3, for --covariance=full at high D: the clipped mixture data "
                   "has singular cluster covariances).")
flags.DEFINE_list("fit_seeds", ["0"], "GMM: fit seeds (k-means key / random_state); quality is "
                  "reported as mean [min, max] over seeds, time as the mean per fit.")

IMPLS = {
  "kmeans": ["jaxad", "sklearn"],
  "gmm": ["jaxad", "sklearn"],
  "greedy": ["jaxad", "jaxad_plain", "torch_loop", "numpy_loop"],
  "knn": ["jaxad", "faiss", "torch_cdist"],
}


def _mem_kib(field: str) -> int:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1])
  return 0


def make_data(n: int, d: int, seed: int):
  """Synthetic patch-like features: a mixture of 64 anisotropic blobs, float32, non-negative."""
  import numpy as np
  rng = np.random.default_rng(seed)
  centres = rng.gamma(1.0, 1.0, size=(64, d)).astype(np.float32)
  scales = rng.uniform(0.1, 0.6, size=(64, 1)).astype(np.float32)
  lab = rng.integers(0, 64, size=n)
  x = centres[lab] + scales[lab] * rng.standard_normal((n, d), dtype=np.float32)
  return np.maximum(x, 0.0)


def write_features() -> None:
  """Real patch features: ImageNet MobileNetV2 stride8+stride16+stride32+head (32+96+320+1280 =
  1728 channels) on the first 128 MVTec AD bottle train images at 224 px, bilinearly resized to the
  stride-8 grid (28 x 28) and 3x3-averaged (PatchCore's local aggregation): 100,352 x 1728."""
  import glob
  import jax
  import jax.numpy as jnp
  import numpy as np
  from PIL import Image
  from jaxad import backbones as bb
  if not FLAGS.mvtec_dir or not FLAGS.npy:
    raise app.UsageError("--task=features needs --mvtec_dir=path/to/mvtec_ad and --npy=<output .npy>")
  files = sorted(glob.glob(os.path.join(FLAGS.mvtec_dir, "bottle/train/good/*.png")))[:128]
  if not files:
    raise FileNotFoundError(f"no MVTec AD bottle images under {FLAGS.mvtec_dir}/bottle/train/good")
  imgs = np.stack([np.asarray(Image.open(f).convert("RGB").resize((224, 224), Image.BILINEAR),
                              np.float32) / 255 for f in files])
  mod, var = bb.create("mobilenet_v2"), bb.load_pretrained("mobilenet_v2")
  layers = ["stride8", "stride16", "stride32", "head"]

  @jax.jit
  def feats(x):
    fs = bb.extract_features(mod, var, x, layers)
    out = []
    for name in layers:
      a = jax.image.resize(fs[name], (x.shape[0], 28, 28, fs[name].shape[-1]), "bilinear")
      out.append(jax.lax.reduce_window(a, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), "SAME") / 9)
    return jnp.concatenate(out, -1)

  x = np.concatenate([np.asarray(feats(imgs[i:i + 16])) for i in range(0, len(imgs), 16)])
  x = x.reshape(-1, x.shape[-1]).astype(np.float32)
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.npy)), exist_ok=True)
  np.save(FLAGS.npy, x)
  print(f"wrote {FLAGS.npy}: {x.shape}")


def load_data(n: int, d: int, seed: int):
  import numpy as np
  if FLAGS.data == "mix":
    return make_data(n, d, seed)
  if FLAGS.data == "gauss":
    return np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32)
  x = np.load(FLAGS.npy, mmap_mode="r")
  if x.shape[0] < n:
    raise ValueError(f"{FLAGS.npy} has {x.shape[0]} rows < --n={n}")
  return np.ascontiguousarray(x[:n], dtype=np.float32)


def run_child() -> None:
  import numpy as np
  task, impl = FLAGS.task, FLAGS.impl
  x = load_data(FLAGS.n, FLAGS.d, FLAGS.seed)
  out: dict = {}
  arrays: dict = {}
  if task == "knn":
    q = make_data(FLAGS.queries, FLAGS.d, FLAGS.seed + 1)
  # Import the implementation's libraries first, so the memory baseline includes them.
  mods = {"jaxad": ["jax", "jaxad.cluster"], "jaxad_plain": ["jax", "jaxad.cluster"], "sklearn": ["sklearn.cluster", "sklearn.mixture"],
          "torch_loop": ["torch", "jax"], "numpy_loop": ["jax"], "faiss": ["faiss"],
          "torch_cdist": ["torch"]}[impl]
  for mod in mods:
    __import__(mod)
  base = _mem_kib("VmRSS")

  def timed(fn, repeats=None):
    best = float("inf")
    for _ in range(FLAGS.repeats if repeats is None else repeats):
      t0 = time.perf_counter()
      r = fn()
      best = min(best, time.perf_counter() - t0)
    return r, best

  if impl in ("jaxad", "jaxad_plain"):
    import jax
    import jaxad.cluster as jc
    key = jax.random.key(0)
    if task == "kmeans":
      fn = lambda: jax.block_until_ready(jc.kmeans(key, x, FLAGS.k_kmeans, verbose=False))
    elif task == "gmm":
      return _gmm_child(x, impl, base)
    elif task == "greedy":
      m = int(FLAGS.ratio * FLAGS.n)
      # Features already on the device, as after a jitted feature extractor (the loops get their
      # projected features in memory too); the host->device copy of a fresh 100k x 1536 NumPy
      # array alone takes ~2 s for 690 MB (page faults of the new buffer).
      xd = jax.block_until_ready(jax.device_put(x))
      fn = lambda: jax.block_until_ready(jc.greedy_coreset(key, xd, m,
                                                           projection_dim=FLAGS.projection_dim,
                                                           prune=impl == "jaxad", verbose=False))
    else:
      fn = lambda: jax.block_until_ready(jc.knn(q, x, FLAGS.k_knn, squared=True))
    r, out["cold_s"] = timed(fn, repeats=1)
    r, out["time_s"] = timed(fn)
    if task == "kmeans":
      out.update(quality=float(r.inertia), n_iter=int(r.n_iter))
    elif task == "gmm":
      out.update(quality=float(r.log_likelihood), n_iter=int(r.n_iter))
    elif task == "greedy":
      arrays["indices"] = np.asarray(r.indices)
    else:
      arrays.update(indices=np.asarray(r.indices), dist=np.asarray(r.distances))
  elif impl == "sklearn":
    if task == "kmeans":
      from sklearn.cluster import KMeans
      r, out["time_s"] = timed(lambda: KMeans(FLAGS.k_kmeans, n_init=1, random_state=0,
                                              algorithm="lloyd").fit(x))
      out.update(quality=float(r.inertia_), n_iter=int(r.n_iter_))
    else:
      return _gmm_child(x, impl, base)
  elif impl in ("torch_loop", "numpy_loop"):
    import jax
    from jaxad.cluster.coreset import project
    m = int(FLAGS.ratio * FLAGS.n)
    steps = m if FLAGS.ref_steps <= 0 else min(m, FLAGS.ref_steps)
    kp, ks = jax.random.split(jax.random.key(0))
    p = np.asarray(project(kp, x, FLAGS.projection_dim if FLAGS.projection_dim < FLAGS.d else None))
    start = int(jax.random.randint(ks, (), 0, FLAGS.n, dtype=np.int32))
    base = _mem_kib("VmRSS")
    if impl == "torch_loop":
      import torch
      torch.set_num_threads(2)

      def loop():  # anomalib KCenterGreedy.select_coreset_idxs, start point included
        feats = torch.from_numpy(p)
        min_d = None
        idx = start
        sel = [start]
        for _ in range(steps - 1):
          dist = torch.linalg.norm(feats - feats[idx:idx + 1], ord=2, dim=1, keepdim=True)
          min_d = dist if min_d is None else torch.minimum(min_d, dist)
          idx = int(torch.argmax(min_d).item())
          sel.append(idx)
        return np.array(sel)
    else:
      def loop():
        p_sq = (p * p).sum(1)
        min_d = np.full(len(p), np.inf, np.float32)
        idx = start
        sel = [start]
        for _ in range(steps - 1):
          dist = np.maximum(p_sq - 2.0 * (p @ p[idx]) + p_sq[idx], 0.0)
          np.minimum(min_d, dist, out=min_d)
          idx = int(np.argmax(min_d))
          sel.append(idx)
        return np.array(sel)
    sel, t = timed(loop)
    out["time_s"] = t * (m - 1) / max(steps - 1, 1)
    out["steps_run"] = steps
    arrays["indices"] = sel
  elif impl == "faiss":
    import faiss
    faiss.omp_set_num_threads(2)
    def run():
      index = faiss.IndexFlatL2(FLAGS.d)
      index.add(x)
      return index.search(q, FLAGS.k_knn)
    (dist, idx), out["time_s"] = timed(run)
    arrays.update(indices=idx.astype(np.int32), dist=dist)
  elif impl == "torch_cdist":
    import torch
    torch.set_num_threads(2)
    def run():
      bank = torch.from_numpy(x)
      ds, ids = [], []
      for s in range(0, len(q), 1024):
        dd = torch.cdist(torch.from_numpy(q[s:s + 1024]), bank)
        v, i = torch.topk(dd, FLAGS.k_knn, dim=1, largest=False)
        ds.append(v.square().numpy())
        ids.append(i.numpy())
      return np.concatenate(ds), np.concatenate(ids)
    (dist, idx), out["time_s"] = timed(run)
    arrays.update(indices=idx.astype(np.int32), dist=dist)
  out["peak_extra_mib"] = (_mem_kib("VmHWM") - base) / 1024
  if arrays:
    np.savez(FLAGS.out, **arrays)
  print("RESULT " + json.dumps(out))


def _shared_gmm_init(x, seed: int, diag_only: bool):
  """Float64 weights, means, covariances (+ --reg_covar) of the clusters of one jaxad k-means run."""
  import jax
  import numpy as np
  import jaxad.cluster as jc
  k = FLAGS.k_gmm
  lab = np.asarray(jc.kmeans(jax.random.key(seed), x, k, verbose=False).assignments)
  full = FLAGS.covariance == "full" and not diag_only
  weights, means, covs = np.zeros(k), np.zeros((k, x.shape[1])), []
  for j in range(k):
    xj = np.asarray(x[lab == j], np.float64)
    weights[j], means[j] = len(xj) / len(x), xj.mean(0)
    diff = xj - means[j]
    covs.append(diff.T @ diff / len(xj) + FLAGS.reg_covar * np.eye(x.shape[1]) if full
                else (diff * diff).mean(0) + FLAGS.reg_covar)
  covs = np.stack(covs)
  if FLAGS.covariance == "full" and diag_only:
    covs = np.stack([np.diag(c) for c in covs])
  return weights, means, covs


def _gmm_child(x, impl: str, base: int) -> None:
  """GMM child: one fit per --fit_seeds entry; prints a RESULT line."""
  import numpy as np
  seeds = [int(s) for s in FLAGS.fit_seeds]
  inits = {s: None for s in seeds}
  if FLAGS.gmm_init != "kmeans":   # computed once by the parent (no jax threads in this process)
    for s in seeds:
      z = np.load(os.path.join(os.path.dirname(FLAGS.out), f"gmm_init_{s}.npz"))
      inits[s] = (z["weights"], z["means"], z["covs"])
  base = _mem_kib("VmRSS")
  full = FLAGS.covariance == "full"
  out: dict = {}
  if impl == "jaxad":
    import jax
    import jaxad.cluster as jc

    def fit(s):
      init = None if inits[s] is None else jc.GMMParams(inits[s][1], inits[s][2], inits[s][0])
      return jax.block_until_ready(jc.gmm_em(jax.random.key(s), x, FLAGS.k_gmm,
                                             covariance=FLAGS.covariance, max_iter=FLAGS.gmm_max_iter,
                                             tol=FLAGS.gmm_tol, reg_covar=FLAGS.reg_covar, init=init,
                                             verbose=False))
    t0 = time.perf_counter()
    fit(seeds[0])
    out["cold_s"] = time.perf_counter() - t0
    lls, iters, times = [], [], []
    for s in seeds:
      t0 = time.perf_counter()
      r = fit(s)
      times.append(time.perf_counter() - t0)
      lls.append(float(r.log_likelihood))
      iters.append(int(r.n_iter))
  else:
    import warnings
    from sklearn.mixture import GaussianMixture
    lls, iters, times = [], [], []
    for s in seeds:
      kw = {}
      if inits[s] is not None:
        w, mu, cov = inits[s]
        prec = np.linalg.inv(cov) if full else 1.0 / cov
        # float32 like x: float64 inits would make scikit-learn run its EM in float64 (~10x slower).
        kw = dict(weights_init=w.astype(x.dtype), means_init=mu.astype(x.dtype),
                  precisions_init=prec.astype(x.dtype))
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning with --gmm_tol=0
        t0 = time.perf_counter()
        r = GaussianMixture(FLAGS.k_gmm, covariance_type=FLAGS.covariance, random_state=s,
                            max_iter=FLAGS.gmm_max_iter, tol=FLAGS.gmm_tol,
                            reg_covar=FLAGS.reg_covar, **kw).fit(x)
        times.append(time.perf_counter() - t0)
      lls.append(float(r.score(x)))
      iters.append(int(r.n_iter_))
  out.update(time_s=float(np.mean(times)), quality=float(np.mean(lls)), quality_min=min(lls),
             quality_max=max(lls), n_iter=iters, per_iter_s=float(np.mean(times) / np.mean(iters)),
             lls=lls, peak_extra_mib=(_mem_kib("VmHWM") - base) / 1024)
  print("RESULT " + json.dumps(out))


def main(argv) -> None:
  del argv
  if FLAGS.impl:
    run_child()
    return
  if FLAGS.task == "features":
    write_features()
    return
  import numpy as np
  if FLAGS.data == "npy" and not FLAGS.npy:
    raise app.UsageError("--data=npy needs --npy=<features .npy> (written by --task=features)")
  with tempfile.TemporaryDirectory(prefix="bench_cluster_") as tmp:  # parent <-> child arrays
    results = _run_children(tmp)
  _print_table(results)


def _run_children(tmp: str) -> dict:
  """Runs every implementation in its own subprocess; returns their RESULT records."""
  import numpy as np
  impls = FLAGS.impls or IMPLS[FLAGS.task]
  results = {}
  if FLAGS.task == "gmm" and FLAGS.gmm_init != "kmeans":
    x = load_data(FLAGS.n, FLAGS.d, FLAGS.seed)
    for s in FLAGS.fit_seeds:
      w, mu, cov = _shared_gmm_init(x, int(s), FLAGS.gmm_init == "shared_diag")
      np.savez(os.path.join(tmp, f"gmm_init_{int(s)}.npz"), weights=w, means=mu, covs=cov)
    del x
  for impl in impls:
    path = os.path.join(tmp, impl + ".npz")
    args = [a for a in sys.argv[1:] if not a.startswith(("--impls", "--impl=", "--out"))]
    cmd = [sys.executable, __file__, *args, f"--impl={impl}", f"--out={path}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
      print(f"[{impl}] failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
      continue
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    res = json.loads(line[len("RESULT "):])
    res["wall_s"] = time.perf_counter() - t0
    if os.path.exists(path):
      res["arrays"] = dict(np.load(path))
    results[impl] = res
    print(f"[{impl}] {json.dumps({k: v for k, v in res.items() if k != 'arrays'})}", file=sys.stderr)
  return results


def _print_table(results: dict) -> None:
  import numpy as np
  task = FLAGS.task
  size = f"{FLAGS.n}x{FLAGS.d} {FLAGS.data}"
  extra = {"kmeans": f"k={FLAGS.k_kmeans}",
           "gmm": (f"k={FLAGS.k_gmm} {FLAGS.covariance} max_iter={FLAGS.gmm_max_iter} "
                   f"tol={FLAGS.gmm_tol:g} reg_covar={FLAGS.reg_covar:g}"),
           "greedy": f"m={int(FLAGS.ratio * FLAGS.n)} P={FLAGS.projection_dim}",
           "knn": f"Q={FLAGS.queries} k={FLAGS.k_knn}"}[task]
  print(f"\nrepeats={FLAGS.repeats} (min reported); {os.cpu_count()} CPUs; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
  print(f"\n| task | size | impl | time (s) | JAX cold (s) | extra peak RSS (MiB) | quality |")
  print("|---|---|---|---|---|---|---|")
  ref_impl = {"knn": "faiss" if "faiss" in results else "torch_cdist", "greedy": "numpy_loop"}.get(task)
  for impl, r in results.items():
    if task == "kmeans":
      q = f"inertia {r['quality']:.6g} ({r['n_iter']} it)"
    elif task == "gmm":
      q = (f"mean log-lik {r['quality']:.6g} [min {r['quality_min']:.6g}, max {r['quality_max']:.6g}]"
           f" over seeds {','.join(FLAGS.fit_seeds)}; EM it {r['n_iter']}; "
           f"{r['per_iter_s']:.2f} s per EM it (fit time / it); init {FLAGS.gmm_init}")
    elif task == "greedy":
      q = ""
      for ref in (ref_impl, "jaxad_plain"):
        if ref in results and ref != impl and "arrays" in r and "arrays" in results[ref]:
          a, b = r["arrays"]["indices"], results[ref]["arrays"]["indices"]
          n = min(len(a), len(b))
          diverge = np.nonzero(a[:n] != b[:n])[0]
          q += f"same first {diverge[0] if len(diverge) else n}/{n} indices as {ref}; "
      if r.get("steps_run") and r["steps_run"] < int(FLAGS.ratio * FLAGS.n):
        q += f"; time extrapolated from {r['steps_run']} steps"
    else:
      a = r["arrays"]
      ref = results[ref_impl]["arrays"] if ref_impl in results else a
      agree = np.mean(a["indices"] == ref["indices"])
      err = np.max(np.abs(a["dist"] - ref["dist"]) / np.maximum(ref["dist"], 1e-6))
      q = f"index agreement {agree:.4f} with {ref_impl}; max rel sq-dist diff {err:.1e}"
    cold = f"{r['cold_s']:.2f}" if "cold_s" in r else ""
    print(f"| {task} ({extra}) | {size} | {impl} | {r['time_s']:.2f} | {cold} | "
          f"{r['peak_extra_mib']:.0f} | {q} |")


if __name__ == "__main__":
  app.run(main)
