"""``benchmarks/gpu.py`` runs end to end at its smoke size and writes the JSON and table it says.

GPU timings need a GPU; here the same code runs at tiny sizes on this device, PyTorch on CUDA
where it has it and on the CPU otherwise (the default ``cuda`` without CUDA is a clean skip).
rnnjax's float32 and bf16 entries are checked against a NumPy float64 run of the equations
(``tests/reference.py``), and the expected cases, entries and FLOP counts are written out here.
"""

import contextlib
import importlib.util
import io
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from tests import reference as ref

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _peers  # noqa: E402
import gpu  # noqa: E402

HAS_TORCH = importlib.util.find_spec("torch") is not None
TORCH_CUDA = HAS_TORCH and __import__("torch").cuda.is_available()
TORCH_NAME = "torch nn cuDNN" if TORCH_CUDA else "torch nn (cpu)"
B, T, H = 2, 5, 8  # the smoke size, I = H
CASES = ["lstm-H8-T5-train", "lstm-H8-T5-infer", "gru-H8-T5-train", "gru-H8-T5-infer"]
PEERS = {"lstm": ["flax.linen OptimizedLSTMCell", "flax.nnx RNN", "equinox scan+vmap"],
         "gru": ["flax.linen GRUCell", "flax.nnx RNN", "equinox scan+vmap"]}


def _strict_json(text):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


@contextlib.contextmanager
def _one_torch_thread():
    """PyTorch's CPU threads spin against the other processes of a 2-core machine."""
    if not HAS_TORCH:
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _run(argv):
    stdout = io.StringIO()
    with _one_torch_thread(), contextlib.redirect_stdout(stdout):
        results = gpu.main(argv)
    return results, stdout.getvalue()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """rnnjax (both policies) and PyTorch at the smoke size: every case, 2 rounds."""
    out = tmp_path_factory.mktemp("gpu")
    device = "cuda" if TORCH_CUDA else "cpu"
    results, printed = _run(["--smoke", "--libs", "rnnjax,torch", "--torch-device", device,
                             "--out", str(out)])
    return out, results, printed


def _layer_gflop(kind, mode):
    gates = {"lstm": 4, "gru": 3}[kind]
    f_ih = f_hh = 2 * T * B * H * gates * H  # I = H
    return (f_ih + f_hh if mode == "infer" else 2 * f_ih + 3 * f_hh) / 1e9


def test_smoke_writes_every_case(smoke):
    out, results, _ = smoke
    data = _strict_json((out / "gpu-smoke.json").read_text())
    assert data["benchmark"] == "gpu" and data["repeats"] == 2
    assert list(data["cases"]) == CASES
    wanted = ["rnnjax", "rnnjax bf16"] + ([TORCH_NAME] if HAS_TORCH else [])
    if not HAS_TORCH:
        assert "not installed" in data["skipped_libraries"][TORCH_NAME]
    for name, case in data["cases"].items():
        kind, _, _, mode = name.split("-")
        assert (case["kind"], case["mode"]) == (kind, mode)
        assert case["size"] == {"name": "H8-T5", "batch": B, "steps": T, "inputs": H, "hidden": H}
        assert case["gflop"] == pytest.approx(_layer_gflop(kind, mode))
        assert case["skipped"] == {}
        assert sorted(r["library"] for r in case["rows"]) == sorted(wanted)
        assert sorted(case["first_call_s"]) == sorted(wanted) == sorted(case["second_call_s"])
        for r in case["rows"]:
            assert r["repeats"] == 2 and r["median_ms"] > 0 and r["min_ms"] <= r["median_ms"]
    assert data["cases"] == results["cases"]


def test_smoke_table_is_written_and_printed(smoke):
    out, results, printed = smoke
    table = (out / "gpu-smoke.md").read_text()
    assert table.strip() in printed
    assert "| case | rnnjax f32 ms | rnnjax bf16 ms | fastest peer |" in table
    for name, case in results["cases"].items():
        by_lib = {r["library"]: r for r in case["rows"]}
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == f"{by_lib['rnnjax']['median_ms']:.2f}"
        assert cells[2] == f"{by_lib['rnnjax bf16']['median_ms']:.2f}"
        assert cells[3] == (TORCH_NAME if HAS_TORCH else "—")
        assert f"**{name}** — B={B} T={T} I={H} H={H}" in table


@pytest.mark.skipif(not HAS_TORCH, reason="the speed-up is over a peer; torch is not installed")
def test_smoke_speedups_are_over_the_fastest_other_library(smoke):
    _, results, _ = smoke
    for case in results["cases"].values():
        by_lib = {r["library"]: r for r in case["rows"]}
        for ours in ("rnnjax", "rnnjax bf16"):
            expected = by_lib[TORCH_NAME]["median_ms"] / by_lib[ours]["median_ms"]
            assert by_lib[ours]["speedup_vs_fastest_peer"] == pytest.approx(expected)


def test_smoke_records_bf16_against_f32(smoke):
    _, results, _ = smoke
    for case in results["cases"].values():
        agree = case["bf16_vs_f32"]
        assert 1e-4 < agree["rel_diff"] < 3e-2, agree  # bf16 products: not f32, not broken
        assert agree["max_abs_diff"] < 3e-2


def _numpy_run(kind, params, xs):
    p = {k: np.asarray(v, np.float64) for k, v in params._asdict().items()}
    h = np.zeros((xs.shape[1], H))
    carry, ys = ((h, h) if kind == "lstm" else h), []
    for x in np.asarray(xs, np.float64):
        carry, y = (ref.lstm if kind == "lstm" else ref.gru)(p, carry, x)
        ys.append(y)
    return np.stack(ys)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_timed_rnnjax_entries_match_numpy(kind, smoke):
    """The timed inference entries: float32 to round-off, bf16 to bf16 rounding (and not f32)."""
    _, results, _ = smoke
    size = _peers.Size("H8-T5", batch=B, steps=T, inputs=H, hidden=H)
    cell = {"lstm": rj.lstm, "gru": rj.gru}[kind](H, H)
    want = _numpy_run(kind, cell.init(jax.random.key(0)), _peers._data(size))
    f32 = np.asarray(_peers.rnnjax_entry(kind, size, "infer")())
    bf16 = np.asarray(_peers.rnnjax_entry(kind, size, "infer", dtype=jnp.bfloat16)())
    assert f32.dtype == bf16.dtype == np.float32  # outputs in float32 under either policy
    np.testing.assert_allclose(f32, want, atol=1e-5)
    np.testing.assert_allclose(bf16, want, atol=2e-2)
    assert np.max(np.abs(bf16 - want)) > 1e-4  # the products really were bf16
    recorded = results["cases"][f"{kind}-H8-T5-infer"]["bf16_vs_f32"]["max_abs_diff"]
    assert recorded == pytest.approx(np.max(np.abs(bf16 - f32)), rel=1e-3)


def test_budget_used_up_and_torch_without_cuda_are_skipped_with_reasons(tmp_path):
    results, _ = _run(["--smoke", "--budget-s", "0", "--out", str(tmp_path)])
    data = _strict_json((tmp_path / "gpu-smoke.json").read_text())
    assert list(data["cases"]) == CASES
    for name, case in data["cases"].items():
        kind = name.split("-")[0]
        assert case["rows"] == [] and "bf16_vs_f32" not in case
        installed = [n for n in ["rnnjax", "rnnjax bf16", "torch nn cuDNN", *PEERS[kind]]
                     if n not in data["skipped_libraries"]]
        assert sorted(case["skipped"]) == sorted(installed)
        assert all("time budget (--budget-s 0) was used up" in r for r in case["skipped"].values())
    if HAS_TORCH and not TORCH_CUDA:
        assert "has no CUDA device" in data["skipped_libraries"]["torch nn cuDNN"]
    table = (tmp_path / "gpu-smoke.md").read_text()
    assert "| lstm-H8-T5-train | — | — | — | — | — | — | — |" in table
    assert "Not measured:" in table and "time budget" in table


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="JAX sees a GPU here")
def test_full_run_needs_a_gpu_and_repeats_at_least_one(capsys):
    with pytest.raises(SystemExit):
        gpu.main([])
    assert "JAX sees no GPU (default backend 'cpu')" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu.main(["--smoke", "--repeats", "0"])
    assert "--repeats: expected an integer >= 1, got 0" in capsys.readouterr().err


@pytest.mark.slow
def test_smoke_with_every_jax_peer(tmp_path):
    """Each Flax and Equinox entry builds and runs for both cells and modes (rnnjax, torch: above)."""
    for package in ("flax", "equinox"):
        pytest.importorskip(package)
    results, _ = _run(["--smoke", "--libs", "flax,equinox", "--only", "lstm-H8-T5-train,gru-H8-T5-infer",
                       "--out", str(tmp_path)])
    assert list(results["cases"]) == ["lstm-H8-T5-train", "gru-H8-T5-infer"]
    for name, case in results["cases"].items():
        kind = name.split("-")[0]
        assert case["skipped"] == {}
        assert sorted(r["library"] for r in case["rows"]) == sorted(PEERS[kind])
        assert "bf16_vs_f32" not in case  # no rnnjax entry to compare
