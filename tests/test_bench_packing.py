"""benchmarks/packing.py --smoke: the three batchings cover the same valid tokens, and packing
removes the padding (the speed itself is measured by the benchmark, not asserted here)."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_packing_benchmark_smoke(capsys):
    spec = importlib.util.spec_from_file_location("bench_packing", ROOT / "benchmarks" / "packing.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = bench.main(["--smoke"])
    rows = results["rows"]
    assert set(rows) == {"padded", "bucketed", "packed"}
    for r in rows.values():
        assert len(r["epoch_s"]) == 1 and r["tokens_per_s"] > 0 and r["last_loss"] == r["last_loss"]
        assert r["positions"] >= results["valid_tokens"]
    assert rows["packed"]["positions"] < rows["padded"]["positions"]
    assert rows["packed"]["shapes"] == rows["padded"]["shapes"] == 1
    assert "| packed |" in capsys.readouterr().out
