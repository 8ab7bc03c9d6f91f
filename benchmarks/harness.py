"""What every benchmark script shares: the clean environment its child processes start with,
interleaved repeats, medians with their range, the result table and the JSON file, and a
launcher that measures a command's wall time and peak memory.

Every measurement runs in a child process started with :func:`clean_env`: the caller's
environment without any OpenMP / MKL / BLAS threading variable, the same for the project and
for the reference loops, so each side runs with exactly the settings it makes itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "results"
THREAD_VARS = ("OMP_", "GOMP_", "KMP_", "MKL_", "OPENBLAS_", "BLIS_", "VECLIB_", "NUMEXPR_")


def clean_env(extra: dict | None = None) -> dict:
    """The environment of every measured child: this one minus threading variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(THREAD_VARS)}
    env.update({"NO_COLOR": "1", "COLUMNS": "160", "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


def python() -> str:
    return sys.executable


def forecaster_cmd() -> list[str]:
    script = Path(sys.executable).with_name("forecaster")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "forecaster"]


# ---- the machine -----------------------------------------------------------------------------
def load() -> dict:
    """Load average and the number of runnable tasks right now (from /proc/loadavg)."""
    out = {"loadavg": [round(x, 2) for x in os.getloadavg()]}
    try:
        running = Path("/proc/loadavg").read_text().split()[3].split("/")[0]
        out["running"] = int(running) - 1  # this process is one of them
    except (OSError, IndexError, ValueError):
        pass
    return out


def cpu_model() -> str:
    """The processor's name (``/proc/cpuinfo``), or the architecture where it cannot be read: the
    same code runs at different speeds on different processors, so every figure names its own."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "usable_cpus": affinity,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_start": load(),
    }


# ---- repeated, interleaved measurements --------------------------------------------------------
def interleave(cases: dict[str, Callable[[], dict]], rounds: int, on_result=None) -> dict[str, list[dict]]:
    """Run every case once per round, in the same order each round (A B C A B C ...), so that
    a change of background load hits every case alike."""
    out: dict[str, list[dict]] = {k: [] for k in cases}
    for r in range(rounds):
        for name, fn in cases.items():
            res = fn()
            res["round"] = r
            res["load_after"] = load()
            out[name].append(res)
            if on_result:
                on_result(name, res)
    return out


def spread(values: list[float]) -> dict:
    """Median with min and max."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"


def fmt_spread(s: dict) -> str:
    if s["n"] == 1:
        return fmt(s["median"])
    return f"{fmt(s['median'])} ({fmt(s['min'])}-{fmt(s['max'])})"


# ---- child processes ---------------------------------------------------------------------------
class ChildFailed(RuntimeError):
    pass


def child_json(cmd: list[str], *, env: dict | None = None, timeout: float = 900, cwd: Path | None = None) -> dict:
    """Run ``cmd`` (a fresh process, clean environment unless ``env`` is given) and parse the
    last JSON line it prints."""
    p = subprocess.run(cmd, capture_output=True, text=True, env=env or clean_env(), timeout=timeout, cwd=cwd or ROOT)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-12:])
        raise ChildFailed(f"{' '.join(cmd[:4])} ... exited {p.returncode}:\n{tail}")
    try:
        return json.loads(p.stdout)  # one (perhaps indented) JSON document
    except json.JSONDecodeError:
        return json.loads(lines[-1])  # or its last line


@dataclass
class Proc:
    wall: float
    max_rss_mb: float
    rc: int
    out: str
    err: str


# The launcher (python -S, a few MB) starts the command and reports its wall time and the peak
# RSS of it and every descendant it waited for (RUSAGE_CHILDREN). A child forked straight from a
# process that holds torch would count that process's memory in its own ru_maxrss.
_LAUNCHER = """
import resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.call(sys.argv[2:])
wall = time.perf_counter() - t
with open(sys.argv[1], "w") as f:
    f.write(f"{wall} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")
sys.exit(rc)
"""


def measure(cmd: list[str], *, cwd: Path | None = None, timeout: float = 900, env: dict | None = None) -> Proc:
    """Run ``cmd`` in the clean environment: its wall time and peak RSS (with its children)."""
    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp) / "stats"
        out_path, err_path = Path(tmp) / "out", Path(tmp) / "err"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            p = subprocess.Popen(
                [sys.executable, "-S", "-c", _LAUNCHER, str(stats), *cmd],
                cwd=cwd or ROOT,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=env or clean_env(),
                start_new_session=True,
            )
            try:
                rc = p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:  # stop the command and whatever it started
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                rc = 124
        wall, rss_kb = (float(x) for x in stats.read_text().split()) if stats.is_file() else (timeout, 0)
        return Proc(
            wall, rss_kb / 1024.0, rc, out_path.read_text(errors="replace"), err_path.read_text("utf-8", "replace")
        )


def checked(p: Proc, what: str) -> Proc:
    if p.rc != 0:
        tail = "\n".join((p.err or p.out).strip().splitlines()[-15:])
        raise ChildFailed(f"{what} failed with exit code {p.rc}:\n{tail}")
    return p


# ---- results -----------------------------------------------------------------------------------
@dataclass
class Row:
    area: str
    name: str
    value: float | None
    unit: str
    spread: str = ""  # "median (min-max)" when repeated
    target: str = ""
    met: bool | None = None
    note: str = ""

    def cells(self) -> list[str]:
        ok = "" if self.met is None else ("yes" if self.met else "NO")
        return [self.area, self.name, self.spread or fmt(self.value), self.unit, self.target, ok, self.note]


@dataclass
class Results:
    area: str
    rows: list[Row] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    meta: dict = field(default_factory=machine)

    def add(self, name: str, value: float | None, unit: str, **kw) -> Row:
        row = Row(self.area, name, value, unit, **kw)
        self.rows.append(row)
        print(f"  {self.area:<11} {name:<58} {row.cells()[2]:>26} {unit:<10} {row.note}", flush=True)
        return row

    def payload(self) -> dict:
        self.meta["load_end"] = load()
        return {"area": self.area, "meta": self.meta, "rows": [asdict(r) for r in self.rows], "details": self.details}


def render_table(rows: list[Row]) -> str:
    head = ["area", "benchmark", "value: median (min-max)", "unit", "target", "met", "note"]
    body = [r.cells() for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    align = ["<", "<", ">", "<", "<", "<", "<"]

    def line(cells):
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths)).rstrip()

    out = [line(head), "  ".join("-" * w for w in widths)]
    prev = None
    for r, cells in zip(rows, body):
        if prev is not None and r.area != prev:
            out.append("")
        out.append(line(cells))
        prev = r.area
    return "\n".join(out)


def rows_from(payload: dict) -> list[Row]:
    return [Row(**r) for r in payload["rows"]]


def area_args(description: str, **defaults) -> argparse.ArgumentParser:
    """The options every area script takes."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short smoke run: fewer rounds, smaller workloads")
    ap.add_argument("--rounds", type=int, default=defaults.get("rounds", 3), help="interleaved repeats")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--seed", type=int, default=0)
    return ap


def finish(res: Results, json_path: Path | None) -> int:
    payload = res.payload()
    print()
    print(render_table(res.rows))
    print(f"\nload average at start {res.meta['load_start']}, at end {res.meta['load_end']}")
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return 0
