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


def _r(v: dict) -> str:
    return f"{v['R']:.3f} [{v['R_ci'][0]:.3f}, {v['R_ci'][1]:.3f}]"


def plan_comparison() -> str:
    """R and planning seconds of every method on the whole Worcester sample: the defaults (windows sharing the
    budget by fire risk), windows sharing it by burnable cells, and the whole grid at once."""
    r = _load("plan.json")
    runs = [r["default"], r["windows_25_burnable"], r["whole_grid"]]
    rows = ["| method | defaults: R | plan s | `window_budget=burnable`: R | plan s | `plan_window=null`: R | plan s |",
            "|---|---|---:|---|---:|---|---:|"]
    for m, v in runs[0]["methods"].items():
        cells = [f"{_r(run['methods'][m])} | {run['methods'][m]['plan_seconds']:.1f}" if m in run["methods"]
                 else "the same (no windows) |" if m in ("random", "domirank") else "– |" for run in runs]
        rows.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plan_targets() -> str:
    """The plan command's targets against docs/results/plan.json (the defaults)."""
    r = _load("plan.json")
    default = r["default"]["methods"]
    scoring = max(v["scoring_seconds"] for v in default.values())
    rss = max(s["peak_rss_mb"] for s in (r["default"], r["windows_25_burnable"], r["whole_grid"]))
    policy, flow, random = (default[m]["R"] for m in ("policy", "flow", "random"))
    seconds = default["policy"]["plan_seconds"]
    rows = [
        ("policy planning time, whole sample, 5 %, 2 cores", "≤ 60 s",
         f"{seconds:.1f} s (load average {r['default']['load_average_1min']:.1f})", "yes" if seconds <= 60 else "no"),
        ("scoring with 64 fires, fast simulator", "≤ 60 s", f"≤ {scoring:.1f} s", "yes" if scoring <= 60 else "no"),
        ("peak RSS, whole run", "≤ 4 GB", f"{r['default']['peak_rss_mb']:,} MiB defaults ({len(default)} methods); at most "
         f"{rss:,} MiB (`plan_window=null`)", "yes" if rss <= 4096 else "no"),
        ("policy R ≥ 2 × random's R", f"≥ {2 * random:.3f}", f"{policy:.3f} ({policy / random:.2f} ×)",
         "yes" if policy >= 2 * random else "no"),
        ("policy R ≥ fire flow's R", f"≥ {flow:.3f}", f"{policy:.3f}", "yes" if policy >= flow else "no"),
    ]
    seeds = r.get("training_seeds", [])[1:]
    if seeds:
        ratios = [s["methods"]["policy"]["R"] / s["methods"]["flow"]["R"] for s in seeds]
        rows[-1] = (rows[-1][0] + " (training seed 0; seeds 1, 2 against their own fires)", rows[-1][1],
                    rows[-1][2] + "; seeds 1, 2: " + ", ".join(f"{x:.3f} × flow" for x in ratios),
                    "; ".join(f"{'yes' if x >= 1 else 'no'} for seed {seed}"
                              for seed, x in enumerate([policy / flow] + ratios)))
    if "policy_search" in default:
        search = default["policy_search"]["plan_seconds"]
        rows.insert(1, ("policy_search (the policy with decision-time search) planning time, same run", "≤ 60 s",
                        f"{search:.1f} s", "yes" if search <= 60 else "no"))
        ratios = [s["methods"]["policy_search"]["R"] / s["methods"]["flow"]["R"] for s in r["training_seeds"]]
        rows.append(("policy_search R ≥ fire flow's R (training seeds 0, 1, 2)", "≥ 1.000 × flow",
                     ", ".join(f"{x:.3f} ×" for x in ratios), "yes" if min(ratios) >= 1 else "no"))
    return "\n".join(["| target | threshold | measured | met |", "|---|---|---|---|"]
                     + [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows])


def plan_tile_size() -> str:
    """The policy on one window of its training tile size and of twice that."""
    rows = ["| window (32 planning fires) | policy | flow | random |", "|---|---|---|---|"]
    for s in _load("plan.json")["training_tile_size"]:
        m = s["methods"]
        rows.append(f"| {s['note'].split(',')[0]} | {_r(m['policy'])} | {_r(m['flow'])} | {_r(m['random'])} |")
    return "\n".join(rows)


def plan_seeds() -> str:
    """The policy of each training seed against fire flow on the whole sample (the defaults)."""
    rows = ["| policy of | policy R | flow R | policy ÷ flow | policy_search R | flow_search R | policy_search ÷ flow |",
            "|---|---|---|---:|---|---|---:|"]
    for seed, s in enumerate(_load("plan.json")["training_seeds"]):
        m = s["methods"]
        rows.append(f"| training seed {seed} | {_r(m['policy'])} | {_r(m['flow'])} | "
                    f"{m['policy']['R'] / m['flow']['R']:.3f} | {_r(m['policy_search'])} | {_r(m['flow_search'])} | "
                    f"{m['policy_search']['R'] / m['flow']['R']:.3f} |")
    return "\n".join(rows)


def plan_scaling() -> str:
    """Planning seconds and peak memory against the size of the planned grid (the defaults)."""
    methods = ("policy", "flow", "policy_search", "flow_search")
    rows = ["| cells (burnable) | windows | " + " | ".join(f"{m} s" for m in methods)
            + " | scoring s | peak MiB | load average |", "|---|---:|" + "---:|" * (len(methods) + 3)]
    for a in _load("plan.json")["scaling"]:
        m = a["methods"]
        rows.append(f"| {a['note']} ({a['burnable_cells']:,}) | {a['windows']} | "
                    + " | ".join(f"{m[name]['plan_seconds']:.1f}" for name in methods)
                    + f" | {m['policy']['scoring_seconds']:.1f} | {a['peak_rss_mb']:,} | {a['load_average_1min']:.1f} |")
    return "\n".join(rows)


NAMES = {"no_treatment": "no treatment", "random": "random", "domirank": "DomiRank", "greedy": "greedy",
         "flow": "fire flow", "policy": "policy", "flow_search": "flow_search", "policy_search": "policy_search",
         "local_search": "local_search", "hindsight": "hindsight"}


def _method(name: str) -> str:
    return NAMES.get(name, name)


def _across_seeds_header(first: str, ratios) -> list:
    return [f"| {first} | R mean [95 % interval] | worst seed | " + " | ".join(ratios) + " | plan s per tile |",
            "|---|---:|---:|" + "---:|" * len(ratios) + "---:|"]


def _across_seeds_row(label: str, m: dict, ratios) -> str:
    """One row of an entry of a ``summary.json`` at its first budget: R's mean with its interval, the worst
    seed, then ``ratios`` (functions of the entry), plan seconds."""
    low, high = m["R_mean_ci"][0]
    cells = " | ".join(f"{ratio(m):.3f}" for ratio in ratios)
    return (f"| {label} | {m['R_mean'][0]:.3f} [{low:.3f}, {high:.3f}] | {m['R_worst'][0]:.3f} "
            f"| {cells} | {m['plan_seconds'][0]:.2f} |")


def _across_seeds(summary: dict, ratios: dict) -> str:
    """Per method of a ``summary.json`` (an evaluation multirun), at its first budget (see
    :func:`_across_seeds_row`; ``ratios``: column title -> function of the method's entry)."""
    rows = _across_seeds_header("method", ratios)
    rows += [_across_seeds_row(_method(name), m, ratios.values())
             for name, m in summary["methods"].items() if name != "no_treatment"]
    return "\n".join(rows)


def seeds_summary(path: str) -> str:
    """Per method across checkpoints, with its ratios to the best baseline."""
    return _across_seeds(_load(path), {"mean ÷ best baseline": lambda m: m["ratio_mean"][0],
                                       "worst ÷ best baseline": lambda m: m["ratio_worst"][0]})


def ceiling_summary(path: str) -> str:
    """Per method across checkpoints, its mean R ÷ the hindsight reference's (a ``summary.json`` with ``hindsight``)."""
    summary = _load(path)
    reference = summary["methods"]["hindsight"]["R_mean"][0]
    return _across_seeds(summary, {"÷ hindsight": lambda m: m["R_mean"][0] / reference})


PLANNING_FIRES = {32: "local_search32_{}_summary.json", 64: "ceiling_{}_summary.json",
                  128: "local_search128_{}_summary.json", 256: "local_search256_{}_summary.json"}


def planning_fires(landscape: str) -> str:
    """The local search's R across seeds by its number of planning fires, then the hindsight reference; each
    ÷ the best baseline's mean R (the larger of fire flow's and greedy's in the landscape's seeds tables)."""
    seeds = [_load(f"learning/{landscape}_seeds_summary.json")]
    if (RESULTS / f"learning/{landscape}_greedy_seeds_summary.json").exists():
        seeds.append(_load(f"learning/{landscape}_greedy_seeds_summary.json"))
    best = max(s["methods"][b]["R_mean"][0] for s in seeds for b in ("flow", "greedy") if b in s["methods"])
    ratios = {"÷ best baseline": lambda m: m["R_mean"][0] / best}
    entries = [(str(n), _load("learning/" + name.format(landscape))["methods"]["local_search"])
               for n, name in PLANNING_FIRES.items()]
    entries.append(("the 32 scoring fires (hindsight)",
                    _load(f"learning/ceiling_{landscape}_summary.json")["methods"]["hindsight"]))
    rows = _across_seeds_header("planning fires", ratios)
    rows += [_across_seeds_row(label, m, ratios.values()) for label, m in entries]
    return "\n".join(rows)


def evaluation(path: str) -> str:
    """Per method of one ``evaluation.json``, at its first budget."""
    report = _load(path)
    rows = ["| method | R [95 % interval] | plan s per tile |", "|---|---:|---:|"]
    for name, m in report["methods"].items():
        if name == "no_treatment":
            continue
        low, high = m["R_ci"][0]
        rows.append(f"| {_method(name)} | {m['R'][0]:.3f} [{low:.3f}, {high:.3f}] | {m['plan_seconds'][0]:.2f} |")
    return "\n".join(rows)


def _yaml_keys(path: Path) -> list:
    """Top-level keys of a group file, nested mappings as ``key.*``, in file order."""
    keys, parent = [], None
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#") or line.startswith(("defaults", "# @package")):
            continue
        match = re.match(r"^(\s*)([\w.-]+):(.*)$", line)
        if not match or match.group(2) in ("defaults", "_target_", "_partial_"):
            continue
        if match.group(1) == "":
            parent = match.group(2)
            keys.append(parent if match.group(3).split("#")[0].strip() else parent + ".*")
    return list(dict.fromkeys(keys))


def config_groups() -> str:
    """Every config group of training: its options (the default in bold) and the keys of the default."""
    conf = ROOT / "conf"
    defaults = dict(re.findall(r"^\s+- (\w+): (\w+)", (conf / "config.yaml").read_text(), re.M))
    rows = ["| group | options | keys (units and meaning: the comments in `conf/<group>/<option>.yaml`) |",
            "|---|---|---|"]
    for group, default in defaults.items():
        if group == "experiment" or not (conf / group).is_dir():
            continue
        options = sorted(p.stem for p in (conf / group).glob("*.yaml"))
        listed = ", ".join(f"**`{o}`**" if o == default else f"`{o}`" for o in options)
        keys = ", ".join(f"`{k}`" for k in _yaml_keys(conf / group / f"{default}.yaml"))
        keys = keys or "none: the option names its class"
        rows.append(f"| `{group}` | {listed} | {keys} |")
    presets = ", ".join(f"`{p.stem}`" for p in sorted((conf / "experiment").glob("*.yaml")))
    rows.append(f"| `experiment` | {presets} | small override files of the groups above |")
    return "\n".join(rows)


def readme_figures() -> str:
    """The README's short table: speed, fidelity, learning and whole-landscape figures, each with its command."""
    bench = _load("benchmark.json")
    results, learner = bench["results"], bench["learner"]
    run_benchmark = f"`{BENCHMARK_COMMAND}`"
    rows = [(f"pyretechnics fires/s, `{b}` ÷ `sequential`", _best_speedups(results, "pyretechnics", b), run_benchmark)
            for b in ("process", "joblib") if any(r["backend"] == b for r in results)]
    for f in bench.get("fidelity_by_grid_size", [])[:1]:
        rows.append((f"travel-time simulator ÷ pyretechnics, {f['grid_size']}×{f['grid_size']}",
                     f"{f['speedup']:.0f}× faster, burned-fraction error {f['burned_fraction_mae']:.3f}, "
                     f"plan rank correlation {f['plan_spearman']:.2f}", run_benchmark))
    rows.append(("learner updates/s, batch 64", f"{learner['updates_per_s']:.0f}", run_benchmark))
    for e2e in bench.get("end_to_end", []):
        rows.append((f"experiences/s while learning, {e2e['backend']} × {e2e['num_envs']}",
                     f"{e2e['experiences_per_s']:.0f}", run_benchmark))
    for landscape, file in (("synthetic", "synthetic"), ("Worcester sample", "worcester")):
        learning = _load(f"learning/{file}_seeds_summary.json")["methods"]
        if "greedy" not in learning and (RESULTS / f"learning/{file}_greedy_seeds_summary.json").exists():
            learning["greedy"] = _load(f"learning/{file}_greedy_seeds_summary.json")["methods"]["greedy"]
        held_out = ", ".join(f"{_method(m)} {learning[m]['R_mean'][0]:.3f} ({learning[m]['R_worst'][0]:.3f})"
                             for m in ("policy", "policy_search", "flow", "flow_search", "greedy") if m in learning)
        rows.append((f"held-out R at 5 %, {landscape}, mean (worst) of seeds 0–2", held_out,
                     "[docs/learning.md](docs/learning.md)"))
    plan = _load("plan.json")["default"]
    whole = ", ".join(f"{_method(m)} {plan['methods'][m]['R']:.3f}"
                      for m in ("policy", "policy_search", "flow", "flow_search", "random", "domirank"))
    others = _load("plan.json").get("training_seeds", [])[1:]
    seeds = ("; training seeds 1, 2, ÷ fire flow: " + "; ".join(f"{m} " + ", ".join(
        f"{s['methods'][m]['R'] / s['methods']['flow']['R']:.2f}" for s in others)
        for m in ("policy", "policy_search"))) if others else ""
    rows.append(("R at 5 %, whole Worcester sample, `python -m firebreak_exp.plan`",
                 f"{whole} (policy of training seed 0{seeds}); plan seconds policy "
                 f"{plan['methods']['policy']['plan_seconds']:.0f}, policy_search "
                 f"{plan['methods']['policy_search']['plan_seconds']:.0f}; peak {plan['peak_rss_mb'] / 1024:.1f} GiB",
                 "`python docs/results/collect_plan.py --run`, [docs/plan.md](docs/plan.md)"))
    return "\n".join(["| figure | value | from |", "|---|---|---|"]
                     + [f"| {a} | {b} | {c} |" for a, b, c in rows])


TABLES = {"benchmark-rows": benchmark_rows, "plan-seeds": plan_seeds, "benchmark-summary": benchmark_summary,
          "plan-comparison": plan_comparison, "plan-targets": plan_targets, "plan-tile-size": plan_tile_size,
          "plan-scaling": plan_scaling, "seeds-summary": seeds_summary, "evaluation": evaluation,
          "ceiling-summary": ceiling_summary, "planning-fires": planning_fires,
          "config-groups": config_groups, "readme-figures": readme_figures}
BLOCK = re.compile(r"(?P<open><!-- table:(?P<name>[\w-]+)(?::(?P<arg>[\w./-]+))? -->\n)"
                   r"(?P<body>(?:(?!<!-- /?table:).)*?)(?P<close><!-- /table:(?P=name) -->)", re.S)


def render(text: str) -> str:
    """``text`` with every table block re-rendered from its results file."""
    def replace(match: re.Match) -> str:
        name, arg = match.group("name"), match.group("arg")
        if name not in TABLES:
            raise KeyError(f"unknown table {name!r}; known: {sorted(TABLES)}")
        body = TABLES[name](arg) if arg else TABLES[name]()
        return match.group("open") + body + "\n" + match.group("close")
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
