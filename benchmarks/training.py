#!/usr/bin/env python3
"""Training throughput: the project's loop against a plain PyTorch loop, and forking sequences
against windows.

For each configuration three loops run, each in its own fresh process of
``benchmarks/loops.py`` started from the same clean environment, interleaved round by round
(project-window, hand, project-forking, project-window, hand, ...):

- ``project window``: forecaster's training loop, one window per forecast origin, with the
  settings ``forecaster train`` makes by default;
- ``hand``: a plain PyTorch loop over pre-built windows with torch's own defaults;
- ``project forking``: forecaster's loop in forking-sequence mode (the default).

All three train on the same forecast origins at the same batch (origins per step). Reported,
median (min-max) over the rounds: targets per second of each, project window / hand (target at
least 0.9) and forking / window (target at least 10 at the reference configuration), both
medians of the per-round ratios.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

REFERENCE = {"lookback": 60, "hidden": 64, "layers": 2, "batch": 64}  # the fixed reference configuration
DEFAULTS = {"lookback": 60, "hidden": 32, "layers": 1, "batch": 256}  # forecaster/config.py's defaults
TARGET_HAND = 0.9  # project window loop over the hand loop
TARGET_FORKING = 10.0  # forking over window at the reference configuration


def loop_cmd(loop: str, mode: str, cell: str, cfg: dict, args, extra=()) -> list[str]:
    cmd = [harness.python(), str(harness.BENCH / "loops.py"), "--loop", loop, "--mode", mode, "--cell", cell]
    for k, v in cfg.items():
        cmd += [f"--{k}", str(v)]
    return cmd + ["--seconds", str(args.seconds), "--targets", str(args.targets), "--seed", str(args.seed), *extra]


BUSY_CORES = 0.5  # other processes' average use of the cores during a measurement that makes it a busy one


def ratio(
    res: harness.Results, name: str, num: list, den: list, target: float | None, note: str, busy: float = 0.0
) -> None:
    """The median (min-max) of the per-round ratios ``num / den``, against ``target`` if any;
    not judged when other processes kept ``busy`` cores or more busy during a measurement (one
    thread and torch's spinning threads suffer unequally from it)."""
    r = harness.spread([n / d for n, d in zip(num, den)])
    met = r["median"] >= target if target else None
    if target and busy >= BUSY_CORES:
        met, note = None, f"{note}; not judged: other processes kept {busy:.2f} cores busy during a measurement"
    res.add(
        name,
        r["median"],
        "x",
        spread=harness.fmt_spread(r),
        target=f">= {target:g}" if target else "",
        met=met,
        note=note,
    )


def compare(res: harness.Results, label: str, cell: str, cfg: dict, args, forking_target: float | None) -> None:
    cases = {
        "project window": loop_cmd("project", "window", cell, cfg, args),
        "hand": loop_cmd("hand", "window", cell, cfg, args),
        "project forking": loop_cmd("project", "forking", cell, cfg, args),
    }
    runs = harness.interleave(
        {k: (lambda c=c: harness.child_json(c)) for k, c in cases.items()},
        args.rounds,
        on_result=lambda k, r: print(
            f"    {label} {k}: {r['targets_per_s']:,.0f}/s (threads {r['threads']})", flush=True
        ),
    )
    res.details[label] = {"commands": cases, "runs": runs}
    tps = {k: [r["targets_per_s"] for r in v] for k, v in runs.items()}
    for k in cases:
        s = harness.spread(tps[k])
        res.add(
            f"{label}: {k}",
            s["median"],
            "targets/s",
            spread=harness.fmt_spread(s),
            note=f"threads {runs[k][0]['threads']}",
        )
    busy = max((r.get("other_cores") or 0.0 for v in runs.values() for r in v), default=0.0)
    ratio(
        res,
        f"{label}: project window / hand",
        tps["project window"],
        tps["hand"],
        TARGET_HAND,
        "median of per-round ratios",
        busy,
    )
    ratio(
        res,
        f"{label}: forking / window",
        tps["project forking"],
        tps["project window"],
        forking_target,
        "training targets per second",
        busy,  # the modes suffer unequally from a busy machine too (one thread against two)
    )
    res.details[label]["median_targets_per_s"] = {k: statistics.median(v) for k, v in tps.items()}


def main(argv=None) -> int:
    ap = harness.area_args(__doc__.split("\n\n")[0], rounds=3)
    ap.add_argument("--cells", default="lstm,gru,rnn", help="cells at the reference configuration")
    ap.add_argument("--seconds", type=float, default=8.0, help="timed seconds per loop and round")
    ap.add_argument("--targets", type=int, default=3000, help="forecast origins per pass")
    args = ap.parse_args(argv)
    harness.quick(ap, args, rounds=1, seconds=2.0, targets=1500, cells="lstm")
    cells = harness.names_from(ap, "--cells", args.cells, ("lstm", "gru", "rnn"))
    res = harness.Results("training")
    res.meta.update(rounds=args.rounds, seconds=args.seconds, targets=args.targets)
    ref = REFERENCE
    for cell in cells:
        label = f"{cell} L{ref['lookback']} h{ref['hidden']}x{ref['layers']} bs{ref['batch']}"
        compare(res, label, cell, ref, args, TARGET_FORKING)
    d = DEFAULTS
    compare(res, f"defaults lstm L{d['lookback']} h{d['hidden']}x{d['layers']} bs{d['batch']}", "lstm", d, args, None)
    return harness.finish(res, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
