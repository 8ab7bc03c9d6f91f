#!/usr/bin/env python3
"""Run the forecaster benchmarks (``make bench``): every area as its own process, one table.

Areas, each a script that also runs on its own (``--help`` for its options):

- ``training``: training targets/s of the project's loop, a plain PyTorch loop and forking
  sequences at the reference and default configurations (``benchmarks/training.py``);
- ``threads``: thread settings on a quiet machine, beside a CPU-bound process and with two
  trainings at once (``benchmarks/threads.py``);
- ``convergence``: forking against windows, time to the best validation loss and test metrics
  (``benchmarks/convergence.py``);
- ``universe``: train / evaluate / predict on 1,000 synthetic tickers (``benchmarks/universe.py``);
- ``cli``: command latency and memory (``benchmarks/cli_latency.py``).

Writes ``benchmarks/results/<area>.json`` and ``benchmarks/results/bench.json`` (all rows), and
with ``--readme`` rewrites the table between the ``bench-table`` markers of README.md (a failed
area as a FAILED row; with ``--update`` it keeps its earlier rows). A ``--quick`` smoke run
writes to ``benchmarks/results/quick/`` and cannot be published with ``--readme``/``--update``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

REAL_TICKERS = ("GOOG", "ORCL", "YHOO")
"""The real series the convergence area reads from ``--real-data``."""

AREAS = {
    "training": "training.py",
    "threads": "threads.py",
    "convergence": "convergence.py",
    "universe": "universe.py",
    "cli": "cli_latency.py",
}
START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="benchmarks/run.py", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--only", default=",".join(AREAS), help="comma-separated areas to run")
    ap.add_argument("--skip", default="", help="comma-separated areas to leave out")
    ap.add_argument("--quick", action="store_true", help="a short smoke run of every area")
    ap.add_argument("--real-data", type=Path, default=None, help="convergence: a folder with GOOG/ORCL/YHOO.csv")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--readme", action="store_true", help="rewrite README.md's speed table from the results")
    ap.add_argument("--from-json", type=Path, default=None, help="do not run: render (and --readme) this bench.json")
    ap.add_argument(
        "--update",
        action="store_true",
        help="run only the chosen areas and put their rows in place of theirs in the last bench.json, "
        "keeping the other areas' rows (the table then says which areas were measured when)",
    )
    args = ap.parse_args(argv)
    chosen = [a for a in args.only.split(",") if a]
    skipped = {a for a in args.skip.split(",") if a}
    bad = [a for a in [*chosen, *skipped] if a not in AREAS]
    if bad:
        ap.error(f"unknown area(s) {', '.join(bad)}; choose from {', '.join(AREAS)}")
    args.areas = [a for a in AREAS if a in chosen and a not in skipped]
    if not args.areas and args.from_json is None:
        ap.error("no area left to run (--only and --skip leave none)")
    if args.quick and (args.readme or args.update):
        ap.error("a --quick smoke run is not published: drop --readme and --update")
    if args.from_json is not None:
        if args.update or args.quick:
            ap.error("--from-json runs nothing: drop --update and --quick")
        try:
            args.bench = json.loads(args.from_json.read_text())
            args.bench["areas"], args.bench["meta"]  # noqa: B018 - what a bench.json holds
        except (OSError, ValueError, KeyError, TypeError) as exc:
            why = " ".join(f"{type(exc).__name__}: {exc}".split())
            ap.error(f"--from-json {args.from_json}: not a bench.json this script wrote ({why})")
    elif args.real_data is not None and "convergence" in args.areas:
        # a wrong folder left the real series out and published the table without them
        if missing := [t for t in REAL_TICKERS if not (args.real_data / f"{t}.csv").is_file()]:
            ap.error(f"--real-data {args.real_data}: no {', '.join(f'{t}.csv' for t in missing)} there")
    return args


def results_dir(args) -> Path:
    """Where a run's JSON files go: a --quick smoke run's apart, so it never replaces the
    figures the README was made from."""
    return harness.RESULTS / "quick" if args.quick else harness.RESULTS


def failed(payload: dict) -> bool:
    return any(r["name"] == "FAILED" for r in payload["rows"])


def run_area(area: str, args) -> dict:
    out = results_dir(args) / f"{area}.json"
    out.unlink(missing_ok=True)
    cmd = [harness.python(), str(harness.BENCH / AREAS[area]), "--json", str(out), "--seed", str(args.seed)]
    if args.quick:
        cmd.append("--quick")
    if area == "convergence" and args.real_data is not None:
        cmd += ["--real-data", str(args.real_data)]
    print(f"== {area}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=harness.clean_env(), cwd=harness.ROOT)
    if p.returncode != 0 or not out.is_file():
        row = harness.Row(area, "FAILED", None, "", met=False, note=f"exit code {p.returncode}")
        return {"area": area, "rows": [row.__dict__], "meta": {}, "details": {}, "seconds": time.perf_counter() - t0}
    payload = json.loads(out.read_text())
    payload["seconds"] = round(time.perf_counter() - t0, 1)
    return payload


def readme_table(bench: dict) -> str:
    """The README's speed table: every row with a target, and the training throughput rows."""
    lines = [
        "| area | benchmark | median (min-max) | unit | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for payload in bench["areas"]:
        for r in harness.rows_from(payload):
            if r.name == "FAILED":  # a failed area says so where its rows would be
                lines.append(f"| {r.area} | FAILED ({r.note}) | - |  |  | NO |")
                continue
            if not r.target and not (r.area == "training" and r.unit == "targets/s"):
                continue
            cells = r.cells()
            ok = cells[5]
            lines.append(f"| {r.area} | {r.name} | {cells[2]} | {r.unit} | {r.target} | {ok} |")
    m = bench["meta"]
    lines.append("")
    lines.append(
        f"Measured {m['started']} on {m['cpus']} CPUs ({m['usable_cpus']} usable; "
        f"{m.get('cpu', 'processor not recorded')}), python {m['python']}; "
        f"load average at start {m['load_start']['loadavg']}, at end {m['load_end']['loadavg']}; "
        f"{m['total_seconds']:.0f} s in all."
    )
    for u in m.get("updates", []):
        where = u.get("cpu", "processor not recorded")
        if "cpus" in u:
            where = f"{u['cpus']} CPUs, {u.get('usable_cpus')} usable; {where}; python {u.get('python')}"
        lines.append(
            f"Measured again {u['started']} ({where}; load average at start "
            f"{u['load_start']['loadavg']}, at end {u['load_end']['loadavg']}; {u['total_seconds']:.0f} s): "
            f"the {', '.join(u['areas'])} rows."
        )
    return "\n".join(lines)


def write_readme(table: str) -> None:
    path = harness.ROOT / "README.md"
    text = path.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"README.md has no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{table}\n{END}{tail}", encoding="utf-8")
    print(f"README.md: speed table rewritten ({table.count(chr(10)) + 1} lines)")


def updated(last: dict, new: dict) -> dict:
    """``last`` (a whole bench.json) with ``new``'s areas in place of its own, and a note of when
    they were measured again in its meta. An area that failed this time keeps its earlier rows
    (a failed area new to ``last`` is added, as FAILED)."""
    known = {payload["area"] for payload in last["areas"]}
    fresh = {p["area"]: p for p in new["areas"] if not (failed(p) and p["area"] in known)}
    areas = [fresh.pop(payload["area"], payload) for payload in last["areas"]] + list(fresh.values())
    keys = ("started", "cpus", "usable_cpus", "python", "cpu", "load_start", "load_end", "total_seconds")
    note = {k: new["meta"][k] for k in keys if k in new["meta"]}
    note["areas"] = [p["area"] for p in new["areas"] if not failed(p)]
    if not note["areas"]:
        return last
    meta = dict(last["meta"])
    meta["updates"] = [*superseded(meta.get("updates", []), note["areas"]), note]
    return {"meta": meta, "areas": areas}


def superseded(notes: list[dict], areas: list[str]) -> list[dict]:
    """The earlier notes of areas measured again, without ``areas`` (their rows are replaced);
    a note left without an area is dropped."""
    kept = []
    for note in notes:
        left = [a for a in note["areas"] if a not in areas]
        if left:
            kept.append({**note, "areas": left})
    return kept


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.from_json:
        bench = args.bench
        if args.readme and bench.get("meta", {}).get("quick"):
            print(f"{args.from_json} holds a --quick smoke run: it is not published", file=sys.stderr)
            return 2
    else:
        started = time.perf_counter()
        meta = harness.machine()
        print(f"forecaster benchmarks: {', '.join(args.areas)}; load {meta['load_start']}", flush=True)
        results_dir(args).mkdir(parents=True, exist_ok=True)
        areas = [run_area(a, args) for a in args.areas]
        meta.update(load_end=harness.load(), total_seconds=round(time.perf_counter() - started, 1), quick=args.quick)
        bench = {"meta": meta, "areas": areas}
        if args.update:
            bench = updated(json.loads((harness.RESULTS / "bench.json").read_text()), bench)
        (results_dir(args) / "bench.json").write_text(json.dumps(bench, indent=2, default=str) + "\n")
    rows = [r for payload in bench["areas"] for r in harness.rows_from(payload)]
    print()
    print(harness.render_table(rows))
    m = bench["meta"]
    print(f"\nload average at start {m['load_start']}, at end {m['load_end']}; {m['total_seconds']:.0f} s")
    if args.readme:
        write_readme(readme_table(bench))
    if args.from_json is None and any(failed(p) for p in areas):
        print("some areas FAILED" + (": they keep their earlier rows" if args.update else ""), file=sys.stderr)
        return 1
    return 1 if any(r.name == "FAILED" for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
