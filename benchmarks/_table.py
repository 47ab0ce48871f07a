"""Render a ``benchmarks/results/*.json`` file as the Markdown tables of BENCHMARKS.md.

    .venv/bin/python benchmarks/_table.py benchmarks/results/full.json
    .venv/bin/python benchmarks/_table.py benchmarks/results/gpu.json   # benchmarks/gpu.py's
"""

from __future__ import annotations

import json
import sys


def summary(results: dict) -> str:
    """One row per case: rnnjax, the fastest peer, and rnnjax's speed-up over it."""
    lines = [
        "| case | rnnjax ms | fastest peer | peer ms | rnnjax speed-up | rnnjax GFLOP/s (ceiling share) |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for case, c in results["cases"].items():
        rows = c["rows"]
        ours = next(r for r in rows if r["library"] == "rnnjax")
        peer = next(r for r in rows if not r["library"].startswith("rnnjax"))
        lines.append(
            f"| {case} | {ours['median_ms']:.1f} | {peer['library']} | {peer['median_ms']:.1f} | "
            f"**{peer['median_ms'] / ours['median_ms']:.2f}x** | "
            f"{ours['gflops']:.0f} ({100 * ours['ceiling_share']:.0f}%) |"
        )
    return "\n".join(lines)


def full(results: dict) -> str:
    """Every entry of every case (a case with no entry measured has no table)."""
    out = []
    for case, c in results["cases"].items():
        if not c["rows"]:
            continue
        s = c["size"]
        out.append(f"**{case}** — B={s['batch']} T={s['steps']} I={s['inputs']} H={s['hidden']}, "
                   f"{c['gflop']:.2f} GFLOP\n")
        out.append("| library | median ms | x fastest | GFLOP/s | ceiling share | rounds |")
        out.append("|---|---:|---:|---:|---:|---:|")
        for r in c["rows"]:
            out.append(f"| {r['library']} | {r['median_ms']:.1f} | {r['x_fastest']:.2f} | "
                       f"{r['gflops']:.0f} | {100 * r['ceiling_share']:.0f}% | {r['repeats']} |")
        out.append("")
    return "\n".join(out)


def _ms(row: dict | None) -> str:
    return "—" if row is None else f"{row['median_ms']:.2f}"


def gpu_summary(results: dict) -> str:
    """One row per case of ``benchmarks/gpu.py``: rnnjax f32 and bf16 against the fastest peer.

    A speed-up is the peer's median over rnnjax's (above 1: rnnjax faster); "—" is an entry
    not measured (its reason is in the JSON's ``skipped`` and listed under the table).
    """
    lines = [
        "| case | rnnjax f32 ms | rnnjax bf16 ms | fastest peer | peer ms | f32 speed-up | "
        "bf16 speed-up | bf16 vs f32 (rel. diff) |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    skipped = {}
    for case, c in results["cases"].items():
        by_lib = {r["library"]: r for r in c["rows"]}
        f32, bf16 = by_lib.get("rnnjax"), by_lib.get("rnnjax bf16")
        peer = next((r for r in c["rows"] if not r["library"].startswith("rnnjax")), None)
        speed = lambda ours, peer=peer: ("—" if ours is None or peer is None
                                         else f"**{peer['median_ms'] / ours['median_ms']:.2f}x**")
        agree = c.get("bf16_vs_f32")
        lines.append(
            f"| {case} | {_ms(f32)} | {_ms(bf16)} | {'—' if peer is None else peer['library']} | "
            f"{_ms(peer)} | {speed(f32)} | {speed(bf16)} | "
            f"{'—' if agree is None else format(agree['rel_diff'], '.1e')} |"
        )
        for lib, reason in c.get("skipped", {}).items():
            skipped.setdefault((lib, reason), []).append(case)
    for lib, reason in results.get("skipped_libraries", {}).items():
        skipped[(lib, reason)] = ["all cases"]
    if skipped:
        lines.append("")
        lines.append("Not measured:")
        for (lib, reason), cases in skipped.items():
            lines.append(f"- {lib} ({', '.join(cases)}): {reason}")
    return "\n".join(lines)


if __name__ == "__main__":
    data = json.loads(open(sys.argv[1]).read())
    print(gpu_summary(data) if data.get("benchmark") == "gpu" else summary(data))
    print()
    print(full(data))
