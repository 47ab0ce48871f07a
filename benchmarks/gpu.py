"""rnnjax on one GPU against its peers: LSTM and GRU training step and inference, float32 and bf16.

Run from the repository root, on a machine where JAX sees a GPU (``jax[cuda12]``) and PyTorch
has CUDA::

    .venv/bin/python benchmarks/gpu.py            # all cases, at most 8 minutes
    .venv/bin/python benchmarks/gpu.py --smoke    # tiny sizes, on any device (CPU too), seconds

Cases: LSTM and GRU x H in {256, 1024} x T in {128, 1024} x ``train`` / ``infer``, B = 64,
I = H. Entries: rnnjax with the float32 policy (``rj.lstm(I, H)``) and with the bf16 policy
(``rj.lstm(I, H, dtype=jnp.bfloat16)``: params float32, every product bf16 x bf16 accumulated
in float32, gates and state float32), Flax linen ``nn.RNN`` (``OptimizedLSTMCell`` /
``GRUCell``), Flax NNX ``nnx.RNN``, Equinox cells in ``lax.scan`` + ``vmap`` and PyTorch
``nn.LSTM`` / ``nn.GRU`` on ``cuda`` (cuDNN). The steps are those of ``benchmarks/bench.py``
(``benchmarks/_peers.py``): ``train`` is forward + backward over the whole sequence (gradients
of ``mean(ys**2)`` with respect to all weights), ``infer`` the forward pass; data float32,
time-major ``[T, B, I]``. Float32 entries use each library's default matmul precision (recorded
in the JSON: JAX's ``jax_default_matmul_precision``, PyTorch's TF32 switches).

Timing, budgeted. Each entry is built and called twice before it is timed; the first call
(compilation + one run) and the second are recorded apart from the timings (``first_call_s``,
``second_call_s``). Then, as in ``bench.py``, all entries of a case run in rounds, the order
shuffled anew each round, and the table shows the median of ``--repeats`` rounds. A large
float32 and bf16 matmul is timed in every round; the best rate seen is the ceiling that
GFLOP/s is shown as a share of. No new entry starts once the run has used ``--budget-s``
seconds (default 400, so that start-up and the last entry still end within 8 minutes), and
each case gets at most ``--case-cap-s`` seconds and its share of what is left; an entry that
has used its share of a case stops after 3 rounds. An entry not run says why in the JSON
(``skipped``: not installed, no GPU, time cap, or the error it raised). For every case the JSON also has ``bf16_vs_f32``, how far
rnnjax's bf16 outputs (``infer``) or gradients (``train``) are from its float32 ones.

Output: ``benchmarks/results/gpu.json`` (``gpu-smoke.json`` with ``--smoke``) and the
BENCHMARKS.md table, printed and written next to it as ``gpu.md``.
"""

from __future__ import annotations

import os

# JAX takes 75% of the GPU's memory by default; leave room for PyTorch in the same process.
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")

import argparse  # noqa: E402
import functools  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
from _peers import LIBRARIES, Size, rnnjax_entry, torch_entry  # noqa: E402
from _table import full, gpu_summary  # noqa: E402

KINDS = ("lstm", "gru")
MODES = ("train", "infer")
GRID = {"batch": 64, "hidden": (256, 1024), "steps": (128, 1024), "ceiling_n": 8192}
SMOKE_GRID = {"batch": 2, "hidden": (8,), "steps": (5,), "ceiling_n": 64}
RESULTS = Path(__file__).resolve().parent / "results"


def cases(grid: dict) -> list[tuple[str, Size, str, str]]:
    """(name, size, kind, mode), shortest sequences and smallest states first."""
    out = []
    for steps in grid["steps"]:
        for hidden in grid["hidden"]:
            size = Size(f"H{hidden}-T{steps}", batch=grid["batch"], steps=steps, inputs=hidden,
                        hidden=hidden)
            for kind in KINDS:
                for mode in MODES:
                    out.append((f"{kind}-{size.name}-{mode}", size, kind, mode))
    return out


def libraries(torch_device: str) -> dict[str, tuple]:
    """name -> (builder(kind, size, mode), package, kinds); rnnjax first, so it is measured first."""
    torch_name = "torch nn cuDNN" if torch_device == "cuda" else f"torch nn ({torch_device})"
    peer = lambda name, kinds=KINDS: (LIBRARIES[name][0], LIBRARIES[name][2], kinds)
    return {
        "rnnjax": (rnnjax_entry, "rnnjax", KINDS),
        "rnnjax bf16": (functools.partial(rnnjax_entry, dtype=jnp.bfloat16), "rnnjax", KINDS),
        torch_name: (functools.partial(torch_entry, device=torch_device), "torch", KINDS),
        "flax.linen OptimizedLSTMCell": peer("flax.linen OptimizedLSTMCell", ("lstm",)),
        "flax.linen GRUCell": peer("flax.linen GRUCell", ("gru",)),
        "flax.nnx RNN": peer("flax.nnx RNN"),
        "equinox scan+vmap": peer("equinox scan+vmap"),
    }


def unavailable(package: str, torch_device: str) -> str | None:
    """Why a peer cannot run here, or None."""
    if importlib.util.find_spec(package) is None:
        return f"{package} is not installed (pip install -e '.[bench]')"
    if package == "torch" and torch_device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return (f"torch {torch.__version__} has no CUDA device "
                    "(torch.cuda.is_available() is False)")
    return None


def ceiling_runners(n: int):
    """Zero-argument callables timing an n x n x n JAX matmul in float32 and in bf16."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), np.float32))
    b = a.astype(jnp.bfloat16)
    f32 = jax.jit(lambda x: x @ x)
    bf16 = jax.jit(lambda x: jnp.matmul(x, x, preferred_element_type=jnp.float32))
    runners = {"jax float32": lambda: f32(a).block_until_ready(),
               "jax bfloat16": lambda: bf16(b).block_until_ready()}
    for run in runners.values():
        run()
    return runners, 2.0 * n**3


def agreement(f32_out, bf16_out) -> dict:
    """How far the bf16 policy's outputs (or gradients) are from the float32 policy's."""
    a = [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(f32_out)]
    b = [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(bf16_out)]
    diff = np.sqrt(sum(np.sum((x - y) ** 2) for x, y in zip(a, b, strict=True)))
    norm = np.sqrt(sum(np.sum(x**2) for x in a))
    return {"max_abs_diff": float(max(np.max(np.abs(x - y)) for x, y in zip(a, b, strict=True))),
            "rel_diff": float(diff / norm) if norm > 0 else float(diff)}


def build_case(builders: dict, size: Size, kind: str, mode: str, deadline: float,
               why_late: str) -> tuple[dict, dict, dict]:
    """Build and call each entry twice, until ``deadline``; returns (entries, first calls, info).

    ``info`` holds ``second_call_s``, ``skipped`` (name -> reason) and, when both rnnjax
    entries ran, ``bf16_vs_f32`` (their first calls' outputs compared, then let go).
    """
    entries, first, second, skipped, outputs = {}, {}, {}, {}, {}
    for name, build in builders.items():
        if time.perf_counter() > deadline:
            skipped[name] = why_late
            continue
        try:
            fn = build(kind, size, mode)
            t0 = time.perf_counter()
            out = fn()
            t1 = time.perf_counter()
            fn()
            t2 = time.perf_counter()
        except Exception as e:  # noqa: BLE001 - recorded, the other entries still run
            skipped[name] = f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            continue
        entries[name], first[name], second[name] = fn, t1 - t0, t2 - t1
        if name.startswith("rnnjax"):
            outputs[name] = out
    info = {"second_call_s": second, "skipped": skipped}
    if "rnnjax" in outputs and "rnnjax bf16" in outputs:
        info["bf16_vs_f32"] = agreement(outputs["rnnjax"], outputs["rnnjax bf16"])
    return entries, first, info


def rows_for(times: dict, flops: float, ceiling_gflops: float) -> list[dict]:
    """``bench.summarise`` rows; each rnnjax row's speed-up is over the fastest non-rnnjax entry."""
    if not times:
        return []
    rows = bench.summarise(times, flops, ceiling_gflops)
    peers = [r for r in rows if not r["library"].startswith("rnnjax")]
    for r in rows:
        r.pop("speedup_vs_fastest_peer", None)
        if r["library"].startswith("rnnjax") and peers:
            r["speedup_vs_fastest_peer"] = peers[0]["median_ms"] / r["median_ms"]
    return rows


def machine() -> dict:
    info = bench.machine()
    info["jax_devices"] = [d.device_kind for d in jax.devices()]
    info["jax_default_matmul_precision"] = jax.config.jax_default_matmul_precision
    if importlib.util.find_spec("torch"):
        import torch

        info["torch_cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            info["torch_device"] = torch.cuda.get_device_name(0)
            info["cudnn"] = torch.backends.cudnn.version()
            info["torch_cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
            info["torch_matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
    return info


def markdown(results: dict) -> str:
    info = results["machine"]
    device = info.get("jax_devices", ["?"])[0]
    head = (f"`{results['command']}`: {device} (JAX {info['jax']}, backend {info['jax_backend']}"
            f"{', torch ' + info['torch'] if 'torch' in info else ''}"
            f"{', CUDA ' + str(info['torch_cuda']) if info.get('torch_cuda') else ''}"
            f"{', cuDNN ' + str(info['cudnn']) if info.get('cudnn') else ''}), "
            f"{results['elapsed_s']:.0f} s in all.")
    return f"{head}\n\n{gpu_summary(results)}\n\n{full(results)}"


def main(argv=None) -> dict:
    start = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes (B=2, T=5, H=8) on any device, 2 rounds: checks the command")
    parser.add_argument("--repeats", type=int, default=None, help="rounds per case (default 7, smoke 2)")
    parser.add_argument("--only", default=None, help="comma-separated case filter, e.g. lstm-H256")
    parser.add_argument("--libs", default=None, help="comma-separated library filter, e.g. rnnjax,torch")
    parser.add_argument("--budget-s", type=float, default=400.0,
                        help="no entry starts after this many seconds (default 400)")
    parser.add_argument("--case-cap-s", type=float, default=60.0, help="most seconds per case (default 60)")
    parser.add_argument("--torch-device", default="cuda", help="PyTorch's device (default cuda)")
    parser.add_argument("--out", default=str(RESULTS), help="results folder (default benchmarks/results)")
    parser.add_argument("--name", default=None, help="results file name (default gpu, smoke gpu-smoke)")
    args = parser.parse_args(argv)
    if not args.smoke and jax.default_backend() != "gpu":
        parser.error(f"JAX sees no GPU (default backend {jax.default_backend()!r}); install "
                     "jax[cuda12], or run --smoke for the check at tiny sizes on this device")
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats: expected an integer >= 1, got {args.repeats}")

    random.seed(0)
    grid = SMOKE_GRID if args.smoke else GRID
    repeats = args.repeats or (2 if args.smoke else 7)
    todo = cases(grid)
    if args.only:
        todo = [c for c in todo if any(s in c[0] for s in args.only.split(","))]
    builders, skipped_libraries = {}, {}
    for name, (build, package, kinds) in libraries(args.torch_device).items():
        if args.libs is not None and not any(s in name for s in args.libs.split(",")):
            continue
        reason = unavailable(package, args.torch_device)
        if reason is None:
            builders[name] = (build, kinds)
        else:
            skipped_libraries[name] = reason
            print(f"skipped {name}: {reason}", flush=True)

    info = machine()
    print("machine:", json.dumps(info), flush=True)
    ceiling, ceiling_flops = ceiling_runners(grid["ceiling_n"])
    ceiling_samples = {lib: [] for lib in ceiling}
    results = {"benchmark": "gpu", "machine": info,
               "command": " ".join(["benchmarks/gpu.py", *(sys.argv[1:] if argv is None else argv)]),
               "budget_s": args.budget_s, "case_cap_s": args.case_cap_s, "repeats": repeats,
               "skipped_libraries": skipped_libraries, "cases": {}}

    raw = {}
    end = start + args.budget_s
    for i, (case, size, kind, mode) in enumerate(todo):
        now = time.perf_counter()
        allowed = min(args.case_cap_s, (end - now) / (len(todo) - i))
        deadline = now + max(allowed, 0.0)
        why = (f"not run: the run's time budget (--budget-s {args.budget_s:g}) was used up"
               if allowed <= 0 else
               f"not run: this case's time ({allowed:.1f} s, the smaller of --case-cap-s and its "
               f"share of what was left of --budget-s) was used up by the entries before it")
        case_builders = {n: b for n, (b, kinds) in builders.items() if kind in kinds}
        entries, first, extra = build_case(case_builders, size, kind, mode, deadline, why)
        left = max(deadline - time.perf_counter(), 0.0)
        times = bench.run_case(entries, repeats, ceiling, ceiling_samples,
                               budget_s=left / max(len(entries), 1))
        raw[case] = (size, kind, mode, first, extra, times)
        print(f"  {case}: " + ", ".join(f"{n} {1e3 * statistics.median(t):.2f} ms"
                                        for n, t in times.items()), flush=True)

    results["ceiling_gflops"] = {
        lib: {"best": ceiling_flops / min(s) / 1e9, "median": ceiling_flops / statistics.median(s) / 1e9}
        for lib, s in ceiling_samples.items() if s}
    ceiling_gflops = max((v["best"] for v in results["ceiling_gflops"].values()), default=1.0)
    for case, (size, kind, mode, first, extra, times) in raw.items():
        flops = bench.layer_flops(size, bench.GATES[kind], mode)
        results["cases"][case] = {
            "size": size._asdict(), "kind": kind, "mode": mode, "gflop": flops / 1e9,
            "first_call_s": first, **extra, "rows": rows_for(times, flops, ceiling_gflops)}

    results["elapsed_s"] = time.perf_counter() - start
    if hasattr(os, "getloadavg"):
        info["loadavg_end"] = os.getloadavg()
    table = markdown(results)
    print("\n" + table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.name or ("gpu-smoke" if args.smoke else "gpu")
    (out / f"{name}.json").write_text(json.dumps(results, indent=1, allow_nan=False))
    (out / f"{name}.md").write_text(table + "\n")
    print(f"\nwritten {out / (name + '.json')} and {name}.md ({results['elapsed_s']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
