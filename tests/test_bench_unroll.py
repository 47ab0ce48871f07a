"""``benchmarks/unroll.py`` runs end to end at its smoke size and writes the rows it says."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import unroll  # noqa: E402


def test_unroll_benchmark_smoke(tmp_path, capsys):
    out = tmp_path / "unroll.json"
    result = unroll.main(["--smoke", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    rows = result["rows"]
    # LSTM: auto and loop x unroll 1, 4; MGU (no kernel): auto only; each train and infer
    configs = {(r["cell"], r["impl"], r["unroll"]) for r in rows}
    assert configs == {("lstm", "auto", 1), ("lstm", "auto", 4), ("lstm", "loop", 1), ("lstm", "loop", 4),
                       ("mgu", "auto", 1), ("mgu", "auto", 4)}
    assert len(rows) == 2 * len(configs) and {r["mode"] for r in rows} == {"train", "infer"}
    for r in rows:
        assert r["median_ms"] > 0 and r["compile_s"] > 0
        if r["unroll"] == 1:
            assert r["vs_unroll_1"] == 1.0
    printed = capsys.readouterr().out
    assert "unroll and impl, smoke" in printed and printed.count("\n") >= len(rows) + 2
