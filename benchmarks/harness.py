"""What every benchmark script shares: the clean environment its child processes start with,
interleaved repeats, medians with their range, the result table and the JSON file, and a
launcher that measures a command's wall time and peak memory.

Every measurement runs in a child process started with :func:`clean_env`: a few variables of
the caller's environment that say where things are (PATH, HOME, the locale, the temporary
folder) and nothing else (no threading, oneDNN, allocator, CUDA, torchrun or Python path
setting), the same for the project and for the reference loops, so each side runs with exactly
the settings it makes itself.
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
KEPT_VARS = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ", "VIRTUAL_ENV")
"""The caller's variables a measured child keeps: where things are, never how to run them."""


def clean_env(extra: dict | None = None) -> dict:
    """The environment of every measured child: :data:`KEPT_VARS` of this one (a threading,
    oneDNN, allocator, CUDA, torchrun or PYTHONPATH setting would change what is measured),
    then ``extra``."""
    env = {k: os.environ[k] for k in KEPT_VARS if k in os.environ}
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


def cpu_clock() -> tuple[float, float, float] | None:
    """(wall seconds, CPU seconds the whole machine was busy, CPU seconds of this process's
    waited-for children), or None where /proc/stat cannot be read."""
    import resource

    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in (fields + ["0"] * 8)[:8])
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    return time.perf_counter(), busy, children.ru_utime + children.ru_stime


def other_cores(before, after) -> float | None:
    """How many cores, on average, something other than the measured child kept busy between
    two :func:`cpu_clock` readings (a virtual machine's stolen time included): a figure taken
    beside such load is not a quiet machine's."""
    if before is None or after is None or after[0] <= before[0]:
        return None
    other = (after[1] - before[1]) - (after[2] - before[2])
    return round(max(other, 0.0) / (after[0] - before[0]), 3)


# ---- repeated, interleaved measurements --------------------------------------------------------
def interleave(cases: dict[str, Callable[[], dict]], rounds: int, on_result=None) -> dict[str, list[dict]]:
    """Run every case once per round, in the same order each round (A B C A B C ...), so that
    a change of background load hits every case alike."""
    out: dict[str, list[dict]] = {k: [] for k in cases}
    for r in range(rounds):
        for name, fn in cases.items():
            before = cpu_clock()
            res = fn()
            res["round"] = r
            res["load_after"] = load()
            res["other_cores"] = other_cores(before, cpu_clock())
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
    max_rss_mb: float  # the largest single process's peak RSS (the command's or a descendant's)
    rc: int
    out: str
    err: str
    peak_mb: float | None = None  # the most memory of all its processes alive at once (summed PSS, sampled)


def _session_pss_kb(sid: int) -> int | None:
    """The summed proportional set size of every process of session ``sid`` (Linux), in kB:
    pages shared between processes (torch's libraries, loaded by every worker) counted once in
    all. None where /proc cannot tell."""
    total, seen = 0, False
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != sid:
                continue
            with open(f"/proc/{entry.name}/smaps_rollup", encoding="ascii", errors="replace") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        seen = True
                        break
        except (OSError, ValueError):  # gone since the scan, or not ours to read
            continue
    return total if seen else None


class _MemorySampler:
    """The peak of :func:`_session_pss_kb` over a command's life, read every ``every`` seconds
    in a thread: ``ru_maxrss`` gives only the largest single process, not worker processes
    alive at the same time."""

    def __init__(self, sid: int, every: float = 0.05):
        import threading

        self.sid, self.every, self.peak_kb = sid, every, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            kb = _session_pss_kb(self.sid)
            if kb is not None:
                self.peak_kb = kb if self.peak_kb is None else max(self.peak_kb, kb)
            self._stop.wait(self.every)

    def stop(self) -> float | None:
        self._stop.set()
        self._thread.join()
        return None if self.peak_kb is None else self.peak_kb / 1024.0


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
    """Run ``cmd`` in the clean environment: its wall time, the largest peak RSS of it and its
    children, and (on Linux) the most memory all of them held at once."""
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
            sampler = _MemorySampler(p.pid) if Path("/proc/self/smaps_rollup").exists() else None
            try:
                rc = p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:  # stop the command and whatever it started
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                rc = 124
            peak = sampler.stop() if sampler else None
        wall, rss_kb = (float(x) for x in stats.read_text().split()) if stats.is_file() else (timeout, 0)
        return Proc(
            wall,
            rss_kb / 1024.0,
            rc,
            out_path.read_text(errors="replace"),
            err_path.read_text("utf-8", "replace"),
            peak,
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


def at_least(least: int):
    """An argparse type: a whole number of at least ``least``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, not {value}")
        return value

    return parse


positive_int = at_least(1)
"""An argparse type: a whole number of at least 1."""


def area_args(description: str, rounds: int | None = 3) -> argparse.ArgumentParser:
    """The options every area script takes (``--rounds`` where the area repeats its cases:
    ``rounds`` is its default, None for an area that runs each case once)."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument(
        "--quick", action="store_true", help="a short smoke run: fewer rounds, smaller workloads (options given win)"
    )
    if rounds is not None:
        ap.add_argument("--rounds", type=positive_int, default=rounds, help="interleaved repeats")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--seed", type=int, default=0)
    return ap


def quick(ap: argparse.ArgumentParser, args: argparse.Namespace, **smaller) -> None:
    """With ``--quick``, the smaller workload ``smaller`` for every option left at its default:
    an option given on the command line is kept."""
    if args.quick:
        for name, value in smaller.items():
            if getattr(args, name) == ap.get_default(name):
                setattr(args, name, value)


def names_from(ap: argparse.ArgumentParser, option: str, text: str, known, empty_ok: bool = False) -> list[str]:
    """The comma-separated names of ``option``, each one of ``known``, or an argparse error."""
    names = [n for n in text.split(",") if n]
    bad = [n for n in names if n not in known]
    if bad or not (names or empty_ok):
        ap.error(f"{option}: unknown {', '.join(map(repr, bad)) or 'empty list'}; choose from {', '.join(known)}")
    return names


def finish(res: Results, json_path: Path | None) -> int:
    payload = res.payload()
    print()
    print(render_table(res.rows))
    print(f"\nload average at start {res.meta['load_start']}, at end {res.meta['load_end']}")
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return 0
