#!/usr/bin/env python3
"""Thread settings under three situations: a quiet machine, one other CPU-bound process, and
two trainings at once.

Each cell is one fresh process of ``benchmarks/loops.py`` (the project's own training loop)
started from the clean environment plus the setting's variables. Settings:

- ``project``: what ``forecaster train`` does by default (one torch thread);
- ``torch``: torch's own defaults (one thread per core, OpenMP's default waiting);
- ``passive``: ``OMP_WAIT_POLICY=PASSIVE`` with torch's default thread count (the CLI's earlier default);
- more with ``--setting NAME:VAR=VALUE,...[:threads=N]``, e.g. ``active:OMP_WAIT_POLICY=ACTIVE:threads=2``.

Situations: ``quiet`` (the process alone), ``hog`` (a pure-Python busy loop runs beside it for
the whole measurement), ``two`` (two identical trainings start together; both are reported).
Reported: training targets per second, median (min-max) over the rounds, and for the busy
situations the ratio to the same setting's quiet median (target: at least 0.5).
"""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

CONFIGS = {
    "default": {"cell": "lstm", "hidden": 32, "layers": 1, "batch": 256},
    "reference": {"cell": "lstm", "hidden": 64, "layers": 2, "batch": 64},
}
SETTINGS = {
    "project": ({}, []),
    "torch": ({}, ["--torch-defaults"]),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, ["--torch-defaults"]),
}
SITUATIONS = ("quiet", "hog", "two")
BUSY_TARGET = 0.5  # busy samples/s per process over the quiet figure
QUIET_CORES = 0.5  # other processes' average use of the cores that makes a quiet measurement a busy one
HOG = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"


def parse_setting(text: str) -> tuple[str, tuple[dict, list[str]]]:
    """NAME:VAR=VALUE,VAR=VALUE[:threads=N] -> (name, (env, loop args))."""
    name, *parts = text.split(":")
    env, extra = {}, []
    for part in parts:
        for item in filter(None, part.split(",")):
            k, _, v = item.partition("=")
            if k == "threads":
                extra += ["--threads", v]
            else:
                env[k] = v
    return name, (env, extra)


def loop_cmd(config: dict, mode: str, extra: list[str], seconds: float, targets: int, seed: int) -> list[str]:
    cmd = [harness.python(), str(harness.BENCH / "loops.py"), "--loop", "project", "--mode", mode]
    for k, v in config.items():
        cmd += [f"--{k}", str(v)]
    return cmd + ["--seconds", str(seconds), "--targets", str(targets), "--seed", str(seed), *extra]


def run_cell(situation: str, cmd: list[str], env: dict, seconds: float) -> list[dict]:
    if situation == "quiet":
        return [harness.child_json(cmd, env=env)]
    if situation == "two":
        with ThreadPoolExecutor(2) as pool:
            return list(pool.map(lambda _: harness.child_json(cmd, env=env), range(2)))
    # a busy loop beside the measured process for all of its life (start-up included)
    hog = subprocess.Popen([harness.python(), "-c", HOG.format(seconds=seconds * 6 + 120)], env=harness.clean_env())
    try:
        time.sleep(0.5)
        return [harness.child_json(cmd, env=env)]
    finally:
        hog.kill()
        hog.wait()


def main(argv=None) -> int:
    ap = harness.area_args(__doc__.split("\n\n")[0], rounds=2)
    ap.add_argument("--configs", default="default,reference", help=f"from {', '.join(CONFIGS)}")
    ap.add_argument("--modes", default="window,forking")
    ap.add_argument("--settings", default="project,torch,passive", help=f"from {', '.join(SETTINGS)}")
    ap.add_argument("--setting", action="append", default=[], help="an extra setting NAME:VAR=VALUE[:threads=N]")
    ap.add_argument("--situations", default=",".join(SITUATIONS))
    ap.add_argument("--seconds", type=float, default=6.0, help="timed seconds per measurement")
    ap.add_argument("--targets", type=int, default=3000, help="forecast origins per pass")
    args = ap.parse_args(argv)
    harness.quick(ap, args, rounds=1, seconds=2.0, targets=1500, configs="default")
    configs = harness.names_from(ap, "--configs", args.configs, CONFIGS)
    modes = harness.names_from(ap, "--modes", args.modes, ("window", "forking"))
    situations = harness.names_from(ap, "--situations", args.situations, SITUATIONS)
    settings = {
        k: SETTINGS[k] for k in harness.names_from(ap, "--settings", args.settings, SETTINGS, bool(args.setting))
    }
    settings.update(parse_setting(s) for s in args.setting)
    res = harness.Results("threads")
    res.meta.update(rounds=args.rounds, seconds=args.seconds, settings={k: v for k, v in settings.items()})
    cells = {}
    for cfg_name in configs:
        for mode in modes:
            for sname, (env, extra) in settings.items():
                for situation in situations:
                    cmd = loop_cmd(CONFIGS[cfg_name], mode, extra, args.seconds, args.targets, args.seed)
                    key = f"{cfg_name}|{mode}|{sname}|{situation}"
                    cells[key] = lambda s=situation, c=cmd, e=harness.clean_env(env): run_cell(s, c, e, args.seconds)

    def report(key, out):
        rates = [round(r["targets_per_s"]) for r in out["runs"]]
        print(f"    {key:<44} {rates}  load {harness.load()}", flush=True)

    raw = harness.interleave({k: (lambda f=f: {"runs": f()}) for k, f in cells.items()}, args.rounds, report)
    res.details["cells"] = raw
    for key, outs in raw.items():
        cfg_name, mode, sname, situation = key.split("|")
        values = [r["targets_per_s"] for o in outs for r in o["runs"]]
        s = harness.spread(values)
        threads = sorted({r["threads"] for o in outs for r in o["runs"]})
        note = f"threads {threads[0] if len(threads) == 1 else threads}"
        target, met = "", None
        if situation != "quiet" and f"{cfg_name}|{mode}|{sname}|quiet" in raw:
            quiet_runs = [r for o in raw[f"{cfg_name}|{mode}|{sname}|quiet"] for r in o["runs"]]
            quiet = harness.spread([r["targets_per_s"] for r in quiet_runs])["median"]
            ratio = s["median"] / quiet
            target, met = f">= {BUSY_TARGET} x quiet", ratio >= BUSY_TARGET
            note += f"; {ratio:.2f} x quiet"
            # the quiet figure it is judged against must have been quiet: others' use of the cores
            others = max((r.get("other_cores") or 0.0 for r in quiet_runs), default=0.0)
            if others >= QUIET_CORES:
                met = None
                note += f"; not judged: other processes kept {others:.2f} cores busy during a quiet measurement"
        label = f"{cfg_name} {mode}, {sname}, {situation}" + (" (per process)" if situation == "two" else "")
        res.add(label, s["median"], "targets/s", spread=harness.fmt_spread(s), target=target, met=met, note=note)
    return harness.finish(res, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
