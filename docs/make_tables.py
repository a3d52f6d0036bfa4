"""Regenerate the figure tables of README.md and docs/*.md from the results files in docs/results/.

    python docs/make_tables.py           # rewrite every table in place
    python docs/make_tables.py --check   # exit 1 when a table differs from its results file

A table lives between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->``; NAME picks the function
below that renders it. Each results file is what the command named in the table wrote, copied as is.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
RESULTS = DOCS / "results"
BENCHMARK_COMMAND = "python -m firebreak_exp.benchmark"


def _load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def _row(r: dict) -> str:
    speedup = "-" if r["speedup_vs_sequential"] is None else f"{r['speedup_vs_sequential']:.2f}×"
    return (f"| {r['simulator']} | {r['backend']} | {r['num_envs']} | {r['max_workers']} | {r['sims_per_s']:.1f} "
            f"| {r['experiences_per_s']:.1f} | {speedup} |")


def benchmark_rows() -> str:
    """Every collection row of the benchmark: fires/s, experiences/s, speed-up over sequential."""
    report = _load("benchmark.json")
    machine = report["machine"]
    head = (f"`{BENCHMARK_COMMAND}` on {machine['cores']} cores ({machine['cpu_model']}), "
            f"{machine['memory_gib']} GiB, torch {machine['torch']}; results file `docs/results/benchmark.json`.\n\n"
            "| simulator | backend | envs | workers | fires/s | experiences/s | vs sequential |\n"
            "|---|---|---:|---:|---:|---:|---:|")
    return "\n".join([head] + [_row(r) for r in report["results"]])


def _best_speedups(results: list, simulator: str, backend: str) -> str:
    """Speed-ups over sequential at each num_envs >= 2, on the fewest workers measured."""
    chosen = {}
    for r in results:
        if r["simulator"] == simulator and r["backend"] == backend and r["num_envs"] >= 2:
            if r["num_envs"] not in chosen or r["max_workers"] < chosen[r["num_envs"]]["max_workers"]:
                chosen[r["num_envs"]] = r
    return ", ".join(f"{chosen[n]['speedup_vs_sequential']:.2f}× ({n} envs)" for n in sorted(chosen)) or "-"


def benchmark_summary() -> str:
    """The benchmark's headline figures."""
    report = _load("benchmark.json")
    results, learner = report["results"], report["learner"]
    rows = []
    for backend in ("process", "joblib"):
        if any(r["backend"] == backend for r in results):
            rows.append((f"pyretechnics fires/s, `{backend}` over `sequential`",
                         _best_speedups(results, "pyretechnics", backend)))
    for f in report.get("fidelity_by_grid_size", []):
        size = f"{f['grid_size']}×{f['grid_size']}"
        rows.append((f"travel-time simulator vs pyretechnics, {size}",
                     f"{f['speedup']:.0f}× faster, burned-fraction error {f['burned_fraction_mae']:.4f}, "
                     f"plan rank correlation {f['plan_spearman']:.3f}"))
    rows.append(("learner updates/s (batch 64, 25×25)", f"{learner['updates_per_s']:.1f}"))
    for e2e in report.get("end_to_end", []):
        rows.append((f"experiences/s with learning ({e2e['simulator']}, {e2e['backend']} × {e2e['num_envs']})",
                     f"{e2e['experiences_per_s']:.1f}"))
    return "\n".join(["| figure | value |", "|---|---|"] + [f"| {name} | {value} |" for name, value in rows])


TABLES = {"benchmark-rows": benchmark_rows, "benchmark-summary": benchmark_summary}
BLOCK = re.compile(r"(<!-- table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(\n<!-- /table:(?P=name) -->)", re.S)


def render(text: str) -> str:
    """``text`` with every table block re-rendered from its results file."""
    def replace(match: re.Match) -> str:
        name = match.group("name")
        if name not in TABLES:
            raise KeyError(f"unknown table {name!r}; known: {sorted(TABLES)}")
        return match.group(1) + TABLES[name]() + match.group(4)
    return BLOCK.sub(replace, text)


def documents() -> list:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale tables instead of rewriting them")
    args = parser.parse_args(argv)
    stale = []
    for path in documents():
        text = path.read_text()
        new = render(text)
        if new != text:
            stale.append(path)
            if not args.check:
                path.write_text(new)
    for path in stale:
        print(f"{'stale' if args.check else 'rewrote'}: {path.relative_to(ROOT)}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
