"""The ``forecaster`` command line: options -> Config -> one package call -> render -> exit code.

Heavy libraries (torch, pandas, yfinance, matplotlib) are imported inside the commands, so
``forecaster --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from .errors import EXIT_INTERRUPTED, ForecasterError, PartialFailure

app = typer.Typer(
    name="forecaster",
    help="Forecast daily stock prices with RNN / LSTM / GRU models: download, train, evaluate "
    "walk-forward against naive baselines, and predict the next trading sessions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

log = logging.getLogger("forecaster")

# ---- shared options ---------------------------------------------------------------------------
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", help="TOML config file; command-line flags override it.", exists=True, dir_okay=False, readable=True
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Data folder: the store root for --source yahoo (default data/), the "
        "folder of <TICKER>.csv files for --source csv.",
        file_okay=False,
    ),
]


class Source(str, Enum):
    yahoo = "yahoo"
    csv = "csv"


class Cell(str, Enum):
    rnn = "rnn"
    lstm = "lstm"
    gru = "gru"


class Strategy(str, Enum):
    direct = "direct"
    recursive = "recursive"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"


class TrainMode(str, Enum):
    forking = "forking"
    window = "window"


def _val(x):
    return x.value if isinstance(x, Enum) else x


SourceOpt = Annotated[
    Source | None,
    typer.Option("--source", help="Where bars come from: yahoo (the local store filled by download) or csv."),
]
TickersOpt = Annotated[
    str | None, typer.Option("--tickers", "-t", help="Tickers, comma-separated (more may follow as arguments).")
]
ExtraTickers = Annotated[
    list[str] | None, typer.Argument(help="Tickers (alternative to --tickers).", show_default=False, metavar="TICKER")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors and results.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable result on stdout; logs on stderr.")]
LogFileOpt = Annotated[
    Path | None, typer.Option("--log-file", help="Also append timestamped log lines to this file.", dir_okay=False)
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")]
LockOpt = Annotated[
    float, typer.Option("--lock-timeout", min=0, help="Seconds to wait for another run's lock before exiting 75.")
]
RunOpt = Annotated[Path, typer.Option("--run", help="Run directory written by train.", file_okay=False)]


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True, no_color=not sys.stderr.isatty() or "NO_COLOR" in os.environ, highlight=False)


def _stdout_console():
    from rich.console import Console

    tty = sys.stdout.isatty()
    return Console(no_color=not tty or "NO_COLOR" in os.environ, highlight=False, width=None if tty else 200)


def setup_logging(quiet: bool, log_file: Path | None) -> None:
    """Warnings (and info unless --quiet) to stderr; everything with timestamps to --log-file."""
    log.handlers.clear()
    log.setLevel(logging.INFO)
    log.propagate = False
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING if quiet else logging.INFO)
    err.setFormatter(logging.Formatter("%(levelname)s: %(message)s" if not quiet else "%(message)s"))
    err.addFilter(lambda r: r.levelno >= logging.WARNING or not quiet)
    log.addHandler(err)
    if log_file:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(fh)


@contextmanager
def handled(debug: bool = False):
    """Turn domain errors into one line on stderr and the documented exit code."""
    try:
        yield
    except PartialFailure as e:
        for sym, reason in e.failed.items():
            log.error("failed: %s: %s", sym, reason)
        raise typer.Exit(e.exit_code) from None
    except ForecasterError as e:
        if debug:
            raise
        log.error("%s", e)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        log.error("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except typer.Exit:
        raise
    except BrokenPipeError:  # the reader went away (`forecaster info RUN | head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(0) from None
    except OSError as e:  # a file problem the library did not foresee: still one plain line
        if debug:
            raise
        log.error("%s: %s", getattr(e, "filename", None) or "I/O error", e.strerror or e)
        raise typer.Exit(1) from None
    except Exception as e:  # an unexpected bug: one line, traceback only with --debug
        if debug:
            raise
        log.error("unexpected error: %s: %s (run with --debug for the traceback)", type(e).__name__, e)
        raise typer.Exit(1) from None


def _tickers(opt: str | None, extra: list[str] | None) -> list[str] | None:
    names = [t for part in (opt or "").split(",") for t in part.split() if t] + list(extra or [])
    return names or None


def _emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


# ---- commands ---------------------------------------------------------------------------------
@app.command()
def download(
    tickers: Annotated[list[str], typer.Argument(help="Ticker symbols, e.g. AAPL BRK-B ^GSPC.")],
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    lock_timeout: LockOpt = 0.0,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    log_file: LogFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Download daily bars from Yahoo into the local store.

    Split- and dividend-adjusted OHLCV, fetched incrementally (only what is missing, plus a few
    sessions of overlap to catch revisions) into <data-dir>/store/<TICKER>.parquet. Exit 3 if
    some tickers failed, 75 if the network is down or rate-limited for all of them.
    """
    setup_logging(quiet, log_file)
    with handled(debug):
        from .config import load_config
        from .errors import EXIT_PARTIAL, EXIT_TEMPFAIL, TickerError
        from .store import download as do_download
        from .tickers import validate_ticker

        cfg = load_config(config, {"data.data_dir": data_dir})
        syms = list(dict.fromkeys(validate_ticker(t) for t in tickers))
        rep = do_download(syms, cfg.data.data_dir, lock_timeout=lock_timeout)
        if json_out:
            _emit_json({"ok": {s: vars(r) for s, r in rep.ok.items()}, "failed": rep.failed})
        elif not quiet:
            from rich.table import Table

            t = Table("ticker", "rows", "first", "last", "added")
            for s, r in rep.ok.items():
                t.add_row(s, str(r.rows), str(r.first)[:10], str(r.last)[:10], str(r.added))
            _stdout_console().print(t)
        for s, reason in rep.failed.items():
            log.error("failed: %s: %s", s, reason)
        if rep.failed:
            temp = all(rep.kinds.get(s) in ("network", "rate_limit") for s in rep.failed)
            if not rep.ok:
                if temp:
                    raise typer.Exit(EXIT_TEMPFAIL)
                raise TickerError(f"no ticker downloaded ({len(rep.failed)} failed)")
            raise typer.Exit(EXIT_PARTIAL)


@app.command()
def train(
    tickers_arg: ExtraTickers = None,
    tickers: TickersOpt = None,
    config: ConfigOpt = None,
    source: SourceOpt = None,
    data_dir: DataDirOpt = None,
    model: Annotated[Cell | None, typer.Option("--model", help="Recurrent encoder.")] = None,
    strategy: Annotated[
        Strategy | None,
        typer.Option(help="direct (one head emits all H steps) or recursive (one step, rolled forward)."),
    ] = None,
    lookback: Annotated[int | None, typer.Option(help="Sessions of history per window.")] = None,
    horizon: Annotated[int | None, typer.Option(help="Sessions to forecast ahead.")] = None,
    hidden_size: Annotated[int | None, typer.Option(help="Hidden units per layer.")] = None,
    num_layers: Annotated[int | None, typer.Option(help="Stacked recurrent layers.")] = None,
    dropout: Annotated[float | None, typer.Option(help="Dropout between layers and before the head.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs (early stopping may end sooner).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Windows per optimisation step.")] = None,
    patience: Annotated[
        int | None, typer.Option(help="Epochs without validation improvement before stopping early.")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="AdamW learning rate.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (same seed, same model).")] = None,
    val_days: Annotated[int | None, typer.Option(help="Sessions in the validation split.")] = None,
    test_days: Annotated[int | None, typer.Option(help="Sessions in the held-out test split.")] = None,
    device: Annotated[Device | None, typer.Option(help="Where to train (auto: CUDA, then MPS, then CPU).")] = None,
    precision: Annotated[Precision | None, typer.Option(help="fp32, or bf16 autocast on CUDA.")] = None,
    train_mode: Annotated[
        TrainMode | None,
        typer.Option(
            "--train-mode",
            help="forking (the encoder runs once over a stretch of history, a loss at every forecast origin; "
            "the default) or window (one pass per window).",
        ),
    ] = None,
    chunk: Annotated[
        int | None, typer.Option(min=1, help="Forking mode: forecast origins per stretch (after lookback burn-in).")
    ] = None,
    epoch_steps: Annotated[
        int | None,
        typer.Option(
            min=0, help="Forking mode: most steps per epoch; beyond, each step takes more origins (0: no limit)."
        ),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=0, help="torch CPU threads (default 1; 0: one per core this process may use).")
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="Where to write the run (default runs/<model>-<timestamp>).", file_okay=False)
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Continue an interrupted run (its config, with any flags given here on top).", file_okay=False
        ),
    ] = None,
    lock_timeout: LockOpt = 0.0,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    log_file: LogFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Train one global model over the tickers; write a run directory.

    Tickers come from --tickers, trailing arguments or the config file. The run directory holds
    model.safetensors, run.json and history.csv.
    """
    setup_logging(quiet, log_file)
    with handled(debug):
        from .config import load_config
        from .training import Dist
        from .training import train as do_train

        base = None
        if resume is not None:
            from .checkpoint import read_meta

            base = read_meta(resume)["config"]
            run_dir = resume
        cfg = load_config(
            config,
            base=base,
            overrides={
                "data.tickers": _tickers(tickers, tickers_arg),
                "data.source": _val(source),
                "data.data_dir": data_dir,
                "model.cell": _val(model),
                "model.strategy": _val(strategy),
                "window.lookback": lookback,
                "window.horizon": horizon,
                "model.hidden_size": hidden_size,
                "model.num_layers": num_layers,
                "model.dropout": dropout,
                "train.epochs": epochs,
                "train.batch_size": batch_size,
                "train.patience": patience,
                "train.lr": lr,
                "train.seed": seed,
                "window.val_days": val_days,
                "window.test_days": test_days,
                "train.device": _val(device),
                "train.precision": _val(precision),
                "train.mode": _val(train_mode),
                "train.chunk": chunk,
                "train.epoch_steps": epoch_steps,
                "train.threads": threads,
                "run_dir": run_dir,
            },
        )
        main_rank = Dist().main
        show = sys.stderr.isatty() and not quiet and not json_out and main_rank
        with _progress(show, cfg.train.epochs) as (on_epoch, on_batch):
            res = do_train(
                cfg,
                run_dir=cfg.run_dir,
                on_epoch=on_epoch if main_rank else None,
                on_batch=on_batch,
                lock_timeout=lock_timeout,
                resume=resume is not None,
            )
        if not main_rank:
            return
        m = res.meta["metrics"]
        if json_out:
            _emit_json(
                {
                    "run_dir": str(res.run_dir),
                    "name": res.meta["name"],
                    **m,
                    "windows": res.meta["windows"],
                    "skipped": res.meta["skipped"],
                }
            )
        elif not quiet:
            print(
                f"run written to {res.run_dir}  (best epoch {m['best_epoch']} of "
                f"{m['epochs_run']}, validation pinball {m['best_val_loss']:.4f}, "
                f"{m['train_seconds']:.1f} s)"
            )


@contextmanager
def _progress(show: bool, epochs: int):
    """A rich progress bar on a terminal; plain log lines per epoch otherwise."""
    if not show:

        def on_epoch(r):
            log.info(
                "epoch %d: train %.4f  val %.4f  grad-norm %.3f  lr %.2g  %.1fs",
                r.epoch,
                r.train_loss,
                r.val_loss,
                r.grad_norm,
                r.lr,
                r.seconds,
            )

        yield on_epoch, None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=_stderr_console(),
        transient=False,
    ) as bar:
        task = bar.add_task("train", total=None, epoch=1, status="")

        def on_batch(n):
            bar.advance(task, n)

        def on_epoch(r):
            bar.update(
                task,
                epoch=r.epoch + 1,
                completed=0,
                total=r.samples,
                status=f"train {r.train_loss:.4f} val {r.val_loss:.4f}",
            )

        yield on_epoch, on_batch


@app.command()
def evaluate(
    run: RunOpt,
    tickers_arg: ExtraTickers = None,
    tickers: TickersOpt = None,
    source: SourceOpt = None,
    data_dir: DataDirOpt = None,
    plot: Annotated[bool, typer.Option("--plot", help="Write eval/plots/<TICKER>.png and training.png.")] = False,
    fail_if_no_skill: Annotated[
        bool,
        typer.Option("--fail-if-no-skill", help="Exit 1 unless the model beats naive significantly at every step."),
    ] = False,
    alpha: Annotated[float, typer.Option(help="Significance level of the skill verdict.", min=0, max=1)] = 0.05,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    log_file: LogFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Backtest a run walk-forward on its test split against baselines.

    Writes DIR/eval/metrics.csv and DIR/eval/predictions.csv (and plots with --plot), prints a
    table and says plainly whether the model beats the naive forecast.
    """
    setup_logging(quiet, log_file)
    with handled(debug):
        from .evaluation import evaluate as do_evaluate

        rep = do_evaluate(
            run, source=_val(source), data_dir=data_dir, tickers=_tickers(tickers, tickers_arg), plot=plot
        )
        ok, verdict = rep.verdict(alpha)
        if json_out:
            _emit_json(
                {
                    "run": rep.run,
                    "beats_naive": ok,
                    "verdict": verdict,
                    "files": {k: str(v) for k, v in rep.files.items()},
                    "lag": json.loads(rep.lag.to_json(orient="records")),
                    "metrics": json.loads(rep.metrics.to_json(orient="records")),
                }
            )
        elif not quiet:
            _print_metrics(rep)
            print(verdict)
            for k, v in rep.files.items():
                print(f"{k}: {v}")
        if fail_if_no_skill and not ok:
            log.error("no skill over the naive forecast: %s", verdict)
            raise typer.Exit(1)


def _print_metrics(rep) -> None:
    """One row per ticker and step: the model against each baseline, and its intervals."""
    from rich.table import Table

    m = rep.metrics
    t = Table(
        "ticker",
        "step",
        "n",
        "MAE",
        "MAE naive",
        "skill",
        "DM p",
        "skill drift",
        "skill mean",
        "direction",
        "coverage",
        "width",
        title=f"walk-forward test metrics of {rep.model} (run {rep.run}); skill = 1 - MAE/MAE naive",
    )
    by = {(r.ticker, r.model, r.step): r for r in m.itertuples(index=False)}
    for r in m[m["model"] == rep.model].itertuples(index=False):

        def f(v, pct=False):
            return "" if v != v else (f"{v:+.2%}" if pct else f"{v:.4g}")

        naive = by[(r.ticker, "naive", r.step)]
        t.add_row(
            r.ticker,
            str(r.step),
            str(r.n),
            f(r.mae),
            f(naive.mae),
            f(r.skill, True),
            f(r.dm_pvalue),
            f(by[(r.ticker, "drift", r.step)].skill, True),
            f(by[(r.ticker, "mean", r.step)].skill, True),
            f(r.directional_accuracy),
            f(r.coverage),
            f(r.width),
        )
    _stdout_console().print(t)
    for r in rep.lag.itertuples(index=False):
        if r.copies_last_value:
            print(
                f"{r.ticker}: the median forecast moves with the last close (slope {r.slope:.2f}, "
                f"R^2 {r.r2:.2f}): it is essentially the last value shifted forward"
            )


@app.command()
def predict(
    run: RunOpt,
    tickers_arg: ExtraTickers = None,
    tickers: TickersOpt = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Forecast as if today were DATE (YYYY-MM-DD), using bars up to it.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for forecast CSVs (default forecasts/).", file_okay=False)
    ] = None,
    offline: Annotated[bool, typer.Option("--offline", help="Never touch the network; use the store.")] = False,
    source: SourceOpt = None,
    data_dir: DataDirOpt = None,
    max_staleness: Annotated[
        int | None, typer.Option(min=0, help="Sessions a stored bar may lag when the refresh fails (default 3).")
    ] = None,
    lock_timeout: LockOpt = 0.0,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    log_file: LogFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Forecast the next trading sessions and write the forecast CSV.

    Writes OUT/<run>/<as_of>.csv and OUT/<run>/latest.csv. Exit 3 if some tickers failed (the
    rest are written), 75 if the network is down and no usable local data is left.
    """
    setup_logging(quiet, log_file)
    with handled(debug):
        from .prediction import predict as do_predict

        try:
            rep = do_predict(
                run,
                as_of=as_of,
                out=out,
                offline=offline,
                source=_val(source),
                data_dir=data_dir,
                tickers=_tickers(tickers, tickers_arg),
                max_staleness=max_staleness,
                lock_timeout=lock_timeout,
            )
        except PartialFailure as e:
            _show_forecast(e.result, quiet, json_out)
            raise
        _show_forecast(rep, quiet, json_out)


def _show_forecast(rep, quiet: bool, json_out: bool) -> None:
    shown = rep.warnings if len(rep.warnings) <= 10 else rep.warnings[:5]
    for w in shown:
        log.warning("%s", w)
    if len(shown) < len(rep.warnings):
        log.warning(
            "... and %d more such warnings (all of them are in the --json output)", len(rep.warnings) - len(shown)
        )
    for n in rep.notes[:10]:
        log.info("%s", n)
    if json_out:
        _emit_json(
            {
                "run": rep.run,
                "as_of": rep.as_of,
                "failed": rep.failed,
                "warnings": rep.warnings,
                "files": {k: str(v) for k, v in rep.files.items()},
                "forecasts": json.loads(rep.forecasts.to_json(orient="records")),
            }
        )
        return
    if quiet:
        return
    from rich.table import Table

    t = Table("ticker", "as_of", "step", "date", "last_close", "p10", "p50", "p90")
    for _, r in rep.forecasts.iterrows():
        t.add_row(
            r["ticker"],
            r["as_of"],
            str(r["step"]),
            r["date"],
            f"{r['last_close']:.2f}",
            f"{r['p10']:.2f}",
            f"{r['p50']:.2f}",
            f"{r['p90']:.2f}",
        )
    _stdout_console().print(t)
    for k, v in rep.files.items():
        print(f"{k}: {v}")


@app.command()
def info(
    run: Annotated[Path, typer.Argument(help="Run directory.", file_okay=False)],
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Show a run: config, tickers, date ranges, metrics, versions."""
    setup_logging(False, None)
    with handled(debug):
        from .checkpoint import read_meta

        meta = read_meta(run)
        metrics_csv = Path(run) / "eval" / "metrics.csv"
        if json_out:
            _emit_json(meta)
            return
        c = meta["config"]
        print(f"run        {meta['name']}  (format {meta['format_version']}, created {meta['created_at']})")
        if meta.get("status", "complete") != "complete":
            print(f"status     {meta['status']}: resume with `forecaster train --resume {run}`")
        print(
            f"model      {c['model']['cell']} / {c['model']['strategy']}, hidden "
            f"{c['model']['hidden_size']} x {c['model']['num_layers']}, lookback "
            f"{c['window']['lookback']}, horizon {c['window']['horizon']}"
        )
        print(f"data       {c['data']['source']} from {c['data']['data_dir']}, hash {meta['data_hash'][:16]}")
        print(
            f"splits     validation from {meta['splits']['val_start']}, test from "
            f"{meta['splits']['test_start']}; windows {meta['windows']}"
        )
        for s, t in meta["tickers"].items():
            print(f"ticker     {s}: {t['first_date']} .. {t['last_date']} ({t['rows']} bars)")
        for s, why in meta.get("skipped", {}).items():
            print(f"skipped    {s}: {why}")
        print("metrics    " + ", ".join(f"{k} {v}" for k, v in meta["metrics"].items()))
        if metrics_csv.exists():
            print(f"evaluation {metrics_csv}")
        print("versions   " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()))


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    else:
        code = 0
    # Skip the interpreter's teardown of torch and friends (about a second on a small machine):
    # everything this process writes is already flushed and renamed into place by now.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    logging.shutdown()
    os._exit(code)
