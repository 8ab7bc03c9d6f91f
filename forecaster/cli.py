"""The ``forecaster`` command line: options -> Config -> one package call -> render -> exit code.

Heavy libraries (torch, pandas, yfinance, matplotlib) are imported inside the commands, so
``forecaster --help`` stays fast.
"""

from __future__ import annotations

import codecs
import inspect
import io
import json
import logging
import math
import os
import re
import shlex
import sys
import traceback
from collections.abc import Callable
from contextlib import ExitStack, contextmanager, suppress
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, get_args

import typer
import typer.core

from . import choices
from .entry import on_stop_signal, stop_begun
from .errors import EXIT_ERROR, EXIT_INTERRUPTED, RESULT, ConfigError, ForecasterError, options_named

HELP_MIN_WIDTH = 50
"""The parser's narrowest help: it wraps its text at this many columns on any narrower terminal."""


class _HelpFormatter(typer.Context.formatter_class):
    """``--help`` that fits a terminal narrower than the parser's narrowest help (a split pane, a
    phone over ssh): its lines were wider than the terminal, which broke them again in mid-word.
    There an option's help goes under its name, in a column as wide as the terminal allows."""

    def __init__(self, indent_increment: int = 2, width: int | None = None, max_width: int | None = None):
        if width is None:
            import shutil

            columns = shutil.get_terminal_size().columns
            if columns - 2 < HELP_MIN_WIDTH:
                width = max(columns - 2, 20)
        super().__init__(indent_increment, width, max_width)

    def write_dl(self, rows, col_max: int = 30, col_spacing: int = 2) -> None:
        if self.width < HELP_MIN_WIDTH:  # a name longer than this: its help starts on the next line
            col_max = min(col_max, max(self.width // 4, 4))
        super().write_dl(rows, col_max, col_spacing)


class _Context(typer.Context):
    formatter_class = _HelpFormatter


class _Group(typer.core.TyperGroup):
    context_class = _Context


class _Command(typer.core.TyperCommand):
    context_class = _Context


app = typer.Typer(
    cls=_Group,
    name="forecaster",
    help="Forecast daily stock prices with RNN / LSTM / GRU models: download, train, evaluate "
    "walk-forward against naive and volatility baselines, and predict the next trading sessions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

log = logging.getLogger("forecaster")


def _show_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"forecaster {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_show_version, is_eager=True),
    ] = False,
) -> None:
    """Forecast daily stock prices with RNN / LSTM / GRU models: download, train, evaluate
    walk-forward against naive and volatility baselines, and predict the next trading sessions."""
    _Printed.command = ctx.invoked_subcommand or ""  # before the command opens its log file


# ---- shared options ---------------------------------------------------------------------------
def _keep_empty(value: str | None) -> Path | str | None:
    """A folder option as a Path, but an empty one kept as "" (a Path would make it ".", the
    current folder), so that the command refuses it (:func:`_refuse_empty`)."""
    if value is None or value == "":
        return value
    from .config import home_expanded  # `--out=~/x`: no shell expands a ~ after =

    return Path(home_expanded(value))


def _refuse_empty(**options) -> None:
    """A ConfigError (one line, exit 1) for the first folder option given as an empty string."""
    for name, value in options.items():
        if isinstance(value, str) and not value.strip():
            flag = name if name.isupper() else "--" + name.replace("_", "-")  # DIR: an argument
            if name in ("run", "DIR"):  # a run has no default to fall back on
                fix = "give a run directory or a promoted name runs/NAME"
            elif name == "resume":  # nor has --resume: without it, train starts a new run
                fix = "give the interrupted run's directory, or omit --resume to train a new run"
            else:
                fix = f"give a folder name, or omit {flag} for its default"
            raise ConfigError(f'{flag} "" names no folder: {fix}')


def _folder_option(*names: str, help: str):
    """A folder option whose empty value is refused, not taken for the current folder."""
    # one that cannot be read is the command's error (exit 1, naming why), not a usage error
    return typer.Option(*names, help=help, file_okay=False, readable=False, path_type=str, callback=_keep_empty)


def _one_config(files: list[str] | None) -> list[Path] | None:
    """A command reads one config file: ``--config`` given twice is a usage error (the parser
    would otherwise keep the last one and drop the other unsaid). The names are checked as
    written, so that ``--config ""`` does not exist rather than being the current folder."""
    if files and len(files) > 1:
        shown = ", ".join(files)
        raise typer.BadParameter(
            f"given {len(files)} times ({shown}); a command reads one config file: put the keys in one file"
        )
    return [Path(f) for f in files] if files else files


def _config_file(files: list[Path] | None) -> Path | None:
    """The one ``--config`` file given, or None."""
    return files[0] if files else None


ConfigOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--config",
        help="TOML config file (one); command-line flags override it.",
        exists=True,
        dir_okay=False,
        readable=True,
        path_type=str,
        callback=_one_config,
        metavar="<file>",
    ),
]
DataDirOpt = Annotated[
    Path | None,
    _folder_option(
        "--data-dir",
        help="Data folder: the store root for --source yahoo (default data/), the "
        "folder of <TICKER>.csv files for --source csv.",
    ),
]


def _choice(name: str, literal) -> type[StrEnum]:
    """A Typer choice type with exactly the values of one of the config's ``Literal`` types.

    A StrEnum, whose str() is its value: Typer before 0.29 maps a parsed value back through
    str(), and would turn a plain str-Enum member ("Source.csv") into None, dropping the option."""
    return StrEnum(name, {v: v for v in get_args(literal)})


def _one_of(kind: type[Enum]):
    """The parser of an option whose value is one of ``kind``'s: a value that is not says so
    in one line, as other bad option values do (Typer's own check puts pydantic's
    "Value error, " before its words)."""

    def parse(value):
        if isinstance(value, kind):
            return value
        try:
            return kind(value)
        except ValueError:
            shown = ", ".join(repr(k.value) for k in kind)
            raise typer.BadParameter(f"{value!r} is not one of {shown}.") from None

    return parse


Source = _choice("Source", choices.Source)
Cell = _choice("Cell", choices.Cell)
Strategy = _choice("Strategy", choices.Strategy)
Device = _choice("Device", choices.Device)
Precision = _choice("Precision", choices.Precision)
TrainMode = _choice("TrainMode", choices.TrainMode)

# command-line option -> config key; flags override the config file, which overrides the defaults
OVERRIDES = {
    "source": "data.source",
    "data_dir": "data.data_dir",
    "model": "model.cell",
    "strategy": "model.strategy",
    "hidden_size": "model.hidden_size",
    "num_layers": "model.num_layers",
    "dropout": "model.dropout",
    "lookback": "window.lookback",
    "horizon": "window.horizon",
    "val_days": "window.val_days",
    "test_days": "window.test_days",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "patience": "train.patience",
    "lr": "train.lr",
    "seed": "train.seed",
    "device": "train.device",
    "precision": "train.precision",
    "train_mode": "train.mode",
    "chunk": "train.chunk",
    "epoch_steps": "train.epoch_steps",
    "burn_in_grad": "train.burn_in_grad",
    "burn_in_dropout": "train.burn_in_dropout",
    "burn_in_ahead": "train.burn_in_ahead",
    "halves": "train.halves",
    "checkpoint_every": "train.checkpoint_every",
    "threads": "train.threads",
    "run_dir": "run_dir",
}


def overrides(options: dict, tickers: list[str] | None = None) -> dict:
    """Dotted config overrides from a command's options: every option given (not None) that
    has a config key, choices as their plain values."""
    out = {OVERRIDES[k]: _val(v) for k, v in options.items() if k in OVERRIDES}
    out["data.tickers"] = tickers
    return {k: v for k, v in out.items() if v is not None}


def _option_names() -> dict[str, str]:
    """Each config key an option sets, with the option's name (``train.epochs``: ``--epochs``)."""
    return {key: "--" + opt.replace("_", "-") for opt, key in {**OVERRIDES, **TUNE_OVERRIDES}.items()}


def _val(x):
    """A choice option's plain value; any other value as it is."""
    return x.value if isinstance(x, Enum) else x


SourceOpt = Annotated[
    Source | None,
    typer.Option(
        "--source",
        help="Where bars come from: yahoo (the local store filled by download) or csv.",
        parser=_one_of(Source),
    ),
]


def _recorded_data_options(whose: str) -> tuple:
    """``--source`` and ``--data-dir`` of a command that reads a run: by default ``whose``
    (the run's, the champion's) source and folder, not the built-in ones."""
    source = Annotated[
        Source | None,
        typer.Option(
            "--source",
            help=f"Where bars come from: yahoo (the local store filled by download) or csv (default: {whose}).",
            parser=_one_of(Source),
        ),
    ]
    data_dir = Annotated[
        Path | None,
        _folder_option(
            "--data-dir",
            help=f"Data folder: the store root for --source yahoo, the folder of <TICKER>.csv files for "
            f"--source csv (default: {whose}).",
        ),
    ]
    return source, data_dir


RunSourceOpt, RunDataDirOpt = _recorded_data_options("the run's")
TickersOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--tickers",
        "-t",
        metavar="<tickers>",
        help="Tickers, comma-separated; may be repeated (more may follow as arguments).",
    ),
]
ExtraTickers = Annotated[
    list[str] | None, typer.Argument(help="Tickers (alternative to --tickers).", show_default=False, metavar="TICKER")
]
QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        help="Print only errors and warnings (and --json's object, retrain's verdict): no tables or summaries.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable result on stdout; logs on stderr.")]


def _log_file(value: str | Path) -> Path:
    """``--log-file``'s value as a Path: a usage error for an empty one, which named no file (the
    parser said "file '' is a directory", of the current folder it took it for), and for a folder.
    A file this user may write but not read is a log file: it is appended to only."""
    if isinstance(value, Path):
        return value
    if not value.strip():
        raise typer.BadParameter(f"{value!r} names no file: give the log file's name, or leave --log-file out")
    if Path(value).is_dir():
        raise typer.BadParameter(f"{value!r} is a folder: give the name of a file in it")
    return Path(value)


LogFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--log-file", help="Also append timestamped log lines to this file.", parser=_log_file, metavar="<file>"
    ),
]
DebugOpt = Annotated[
    bool,
    typer.Option("--debug", help="Show the full traceback of an error before its line (the exit code stays the same)."),
]
LockOpt = Annotated[
    float,
    typer.Option(
        "--lock-timeout", min=0, metavar="<float>", help="Seconds to wait for another run's lock before exiting 75."
    ),
]
RunOpt = Annotated[
    Path,
    _folder_option("--run", help="Run directory written by train, or a promoted name runs/NAME."),
]


def _bar_shown() -> bool:
    """Whether a progress bar can be drawn: stderr is a terminal that moves its cursor (on a
    dumb one rich draws the bar once, at the end, so the epochs' lines are shown instead)."""
    return sys.stderr.isatty() and os.environ.get("TERM", "").lower() not in ("dumb", "unknown")


def _no_color() -> bool:
    """NO_COLOR set to anything but nothing (https://no-color.org: an empty one asks for nothing)."""
    return os.environ.get("NO_COLOR", "") != ""


def _plain(tty: bool) -> dict:
    """No colour and no other style codes (bold, italic) without a terminal, FORCE_COLOR or
    not (a CI runner's or a wrapper's), nor on one with NO_COLOR: rich's ``no_color`` alone
    keeps the bold and the italic."""
    plain = not tty or _no_color()
    return {"no_color": plain, "color_system": None if plain else "auto"}


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True, **_plain(sys.stderr.isatty()), highlight=False)


def _stdout_console():
    from rich.console import Console

    tty = sys.stdout.isatty()
    return Console(**_plain(tty), highlight=False, width=None if tty else 200)


class _CurrentStderr(logging.StreamHandler):
    """Log lines to whatever ``sys.stderr`` is as each is written (the stream as it was when
    logging was set up glued them onto a progress bar's line). While a bar is drawn, they are
    printed above it by the bar's console, each one line that the terminal wraps: rich's
    stand-in for stderr broke them at its width, a path in them cut in two where it could not
    be pasted back whole."""

    bar = None
    """The console of the progress bar drawn on stderr, while one is drawn."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler sets it: the stream is always the current one
        pass

    def emit(self, record: logging.LogRecord) -> None:
        console = _CurrentStderr.bar
        if console is None:
            super().emit(record)
            return
        from rich.text import Text

        try:
            console.print(Text(self.format(record)), soft_wrap=True)
        except Exception:
            self.handleError(record)


class _LogFileHandler(logging.FileHandler):
    """The ``--log-file`` handler. A write that fails (a full disk, a file system gone
    read-only) stops logging there, with one warning on stderr; logging would otherwise print
    a traceback for every line after it, and the command's work goes on either way. A last
    line cut short (by an earlier run on a full disk) is ended first, so this run's first line
    starts a line of its own."""

    def __init__(self, path: Path):
        # UTF-8 as every file forecaster writes, not the locale's encoding (cron's LC_ALL=C with
        # UTF-8 mode off is ASCII): a line naming a folder it lacks would be lost, with a traceback
        super().__init__(path, encoding="utf-8", errors="backslashreplace")
        if _ends_mid_line(path):
            self.stream.write("\n")  # written with the first line (a disk still full: its warning)

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            super().handleError(record)
            return
        log.removeHandler(self)
        try:
            self.close()
        except OSError:  # what is still buffered cannot be written either
            pass
        log.warning(
            "cannot write the log file %s: %s; nothing more of this run goes there",
            self.baseFilename,
            exc.strerror or type(exc).__name__,
        )


def _ends_mid_line(path: Path) -> bool:
    """Whether the regular file at ``path`` ends with something other than a line break."""
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return False
        with path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except OSError:  # cannot be read back (a log file open to write only): as it is
        return False


class _OneLine(logging.Formatter):
    """A log line whose message keeps to its line: a control character in it (a path or name
    with a newline or an escape) is written as an escape (``\\n``, ``\\x1b``), so that an error is
    one line, marked, and cannot move the terminal's cursor or change its colours. A
    traceback (``--debug``) is printed apart, as it is."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))


ON_BAR = "on_bar"
"""A log record with this attribute true is shown by the progress bar on stderr: the log file
keeps it, the stderr handler leaves it out."""


def setup_logging(quiet: bool, log_file: Path | None, json_out: bool = False) -> None:
    """Warnings (and info unless --quiet) to stderr; everything with timestamps to --log-file.
    A log file that cannot be opened fails the command before any work, with ``--json`` also
    as the error object on stdout."""
    log.handlers.clear()
    log.setLevel(logging.INFO)
    log.propagate = False
    err = _CurrentStderr()
    err.setLevel(logging.WARNING if quiet else logging.INFO)
    # --quiet leaves fewer lines, each marked as in full output: cron mail tells errors from warnings
    err.setFormatter(_OneLine("%(levelname)s: %(message)s"))
    err.addFilter(lambda r: r.levelno >= logging.WARNING or not quiet)
    # a command's result (retrain's verdict) is printed on stdout: the log file keeps it, stderr does not
    err.addFilter(lambda r: not getattr(r, RESULT, False))
    err.addFilter(lambda r: not getattr(r, ON_BAR, False))  # the progress bar shows it on stderr
    # every process of a distributed training reads the same data: rank 0 alone warns of them
    others = _other_rank()

    def rank_0_warns(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or not others

    err.addFilter(rank_0_warns)
    log.addHandler(err)
    if log_file:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            fh = _LogFileHandler(log_file)
        except OSError as exc:  # before any work: one line, exit 1, nothing written
            from .fsio import file_in_the_way, not_a_folder

            blocker = file_in_the_way(log_file.parent)  # "File exists" would say nothing of where
            why = not_a_folder(blocker) if blocker else exc.strerror or type(exc).__name__
            _Printed.json = False
            _failed(json_out, EXIT_ERROR, "cannot write the log file %s: %s", log_file, why)
            raise typer.Exit(EXIT_ERROR) from None
        fh.setFormatter(_OneLine("%(asctime)s %(levelname)s %(message)s"))
        fh.addFilter(rank_0_warns)
        log.addHandler(fh)


class _Printed:
    """Whether the running command has printed its ``--json`` document, and whether a command
    has begun its work (entered :func:`handled`)."""

    json = False
    started = False
    command = ""  # the command running (train: perhaps one process of a distributed job)


@contextmanager
def handled(debug: bool = False, command: str = "forecaster", json_out: bool = False):
    """Turn domain errors into one line on stderr and the documented exit code; ``command``
    names the command in the line of an interruption. With ``json_out``, a command that fails
    before printing its document prints ``{"error": line, "exit_code": code}`` on stdout. With
    ``debug``, the error's traceback comes first on stderr; the line, the document and the exit
    code stay the same (a wrapper told 75, "try again later", is told it with --debug too)."""
    _Printed.json = False
    _Printed.command = command
    stop_begun(False)
    try:
        # begun only here, where a stop gets the command's line: before, main says it was stopped
        # while starting; set before the try, a stop between the two exited 130 without a word
        _Printed.started = True
        with options_named(_option_names()):  # a bad value an option gave names the option
            yield
    except ForecasterError as e:
        if debug:
            _traceback(e)
        if getattr(e, "shown", True):  # not on every rank of a distributed job: the line once
            _failed(json_out, e.exit_code, "%s", e, extra=e.json_extra)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt as e:  # an interrupted search or training says what it kept
        if not _other_rank():  # a distributed job's Ctrl-C reaches every process: one line
            _failed(json_out, EXIT_INTERRUPTED, "%s", str(e) or _interrupted(command))
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except (typer.Exit, typer.BadParameter):  # a usage error the command found itself: exit 2
        raise
    except OSError as e:  # a file problem the library did not foresee: still one plain line
        if debug:
            _traceback(e)
        _failed(json_out, EXIT_ERROR, "%s: %s", getattr(e, "filename", None) or "I/O error", e.strerror or e)
        raise typer.Exit(EXIT_ERROR) from None
    except Exception as e:  # an unexpected bug: one line, traceback only with --debug
        if _other_rank() and _peer_lost(e):  # the process that stopped the job says why
            raise typer.Exit(EXIT_INTERRUPTED) from None
        if debug:
            _traceback(e)
        if _unencodable_path(e):  # a run or config made under a UTF-8 locale, read under another
            why = "cannot be a file name under this locale (its file names are %s): run under a UTF-8 one"
            _failed(json_out, EXIT_ERROR, "%s " + why + " (LC_ALL=C.UTF-8)", e.object, e.encoding)
            raise typer.Exit(EXIT_ERROR) from None
        hint = "" if debug else " (run with --debug for the traceback)"
        _failed(json_out, EXIT_ERROR, "unexpected error: %s: %s%s", type(e).__name__, e, hint)
        raise typer.Exit(EXIT_ERROR) from None
    finally:
        with suppress(OSError, ValueError):  # what is still buffered: a reader gone is noted, not raised
            sys.stdout.flush()


def _unencodable_path(e: BaseException) -> bool:
    """Whether ``e`` is a path that the file names' encoding (a locale that is not UTF-8,
    LC_ALL=fr_FR.ISO-8859-1) cannot write: a folder name from a run or a config file made under
    a UTF-8 locale, `données 予測`."""
    return (
        isinstance(e, UnicodeEncodeError)
        and isinstance(e.object, str)
        and codecs.lookup(e.encoding).name == codecs.lookup(sys.getfilesystemencoding()).name
    )


def _traceback(e: BaseException) -> None:
    """``--debug``: the error's traceback on stderr, before its one line."""
    with suppress(OSError, ValueError):
        traceback.print_exception(e, file=sys.stderr)
        sys.stderr.flush()


class _ReaderMayGo:
    """``sys.stdout`` (and ``sys.stderr``) while the command line runs: once its reader has gone
    away (`forecaster predict ... | head -1`), what is printed is dropped, and the command goes on
    to the end and exits with its own code (a partial forecast's 3, an unusable run's 1, a usage
    error's 2), not 0 at the first write that found the pipe closed, nor 120 from the interpreter.
    A write that fails otherwise (``> /dev/full``, a full disk) drops the rest too, and is kept
    in ``failed``: the command ends as it would have, and :func:`main` says that stdout's output
    was lost (stderr's is dropped unsaid: there is nowhere left to say it)."""

    def __init__(self, stream):
        self._stream = stream
        self._gone = False
        self.failed: OSError | None = None

    def write(self, text: str) -> int:
        if not self._gone:
            try:
                return self._stream.write(text)
            except OSError as e:
                self._lost(e)
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except OSError as e:
                self._lost(e)

    def _lost(self, exc: OSError) -> None:
        self._gone = True
        if not isinstance(exc, BrokenPipeError):  # a reader gone is no failure; a full disk is
            self.failed = exc
        _to_devnull(self._stream)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _to_devnull(stream) -> None:
    """Point ``stream``'s descriptor at /dev/null, so that its flush at exit cannot fail either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
    except (OSError, ValueError, AttributeError):  # a stream without a descriptor (a test's)
        pass


def _failed(json_out: bool, code: int, message: str, *args, extra: dict | None = None) -> None:
    """One ERROR line on stderr for a command that exits ``code``; with ``--json``, unless the
    command printed its document already (an interrupted training's), that line and the code
    as one object on stdout, with the ``extra`` keys (what the line had no room for)."""
    log.error(message, *args)
    if json_out and not _Printed.json and not _other_rank():  # stdout: one document per job
        _emit_json({"error": message % args, "exit_code": code} | (extra or {}))


def _other_rank() -> bool:
    """Whether the running command is a distributed training's process other than rank 0."""
    from .entry import other_training_rank

    return other_training_rank(_Printed.command)


def _peer_lost(exc: BaseException) -> bool:
    from .training import peer_lost  # torch is loaded already in a distributed job

    return peer_lost(exc)


def _interrupted(command: str) -> str:
    """The line for a command stopped by Ctrl-C or SIGTERM: every file it writes is written
    whole or not at all, so what it finished stays and nothing is left half-written."""
    return (
        f"{command} interrupted before it finished; the files it had written are whole and nothing "
        "is half-written: run it again"
    )


def _sigterm_as_ctrl_c() -> None:
    """Let SIGTERM (`kill`, `systemctl stop`, a cron wrapper's timeout) stop any command the
    way Ctrl-C does: the files being written are removed, the locks released, one line is
    printed, exit 130; by default the process would die at once (exit 143) and leave its
    temporary files behind. Only in the main thread of the command-line process."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_stop_signal)  # Ctrl-C, unless the command is already stopping


def _tickers(
    opt: list[str] | None, extra: list[str] | None, has_default: Callable[[], bool] = lambda: True
) -> list[str] | None:
    """The tickers of every ``--tickers`` given (each comma-separated) and then the arguments;
    None when neither is given (the command's default tickers). Tickers given but none named
    (``-t ""``, ``-t ","``, an empty variable in quotes) is a usage error: the default is every
    ticker, the opposite of the empty list a script meant. ``has_default`` says whether there
    are default tickers to leave them out for (a config may list none)."""
    from .tickers import split_tickers

    names = split_tickers(opt or [])
    names += split_tickers(extra or [])  # an argument "A,B" (or "A B") as -t reads it
    if (opt or extra) and not names:
        given = " ".join(f"-t {shown_path(v)}" for v in opt or []) or " ".join(map(shown_path, extra or []))
        left_out = "for the default ones" if has_default() else "and give a --config that lists them"
        raise typer.BadParameter(
            f"{given} names no ticker: name at least one, or leave the tickers out {left_out}",
            param_hint="'-t' / '--tickers'" if opt else "TICKER",
        )
    return names or None


def _config_lists_tickers(config: list[Path] | None, base: dict | None = None) -> bool:
    """Whether the config (``--config`` over ``base``) lists tickers: the default ones of
    download, train and tune. True when it cannot be read, whose error the command says then."""
    from .config import load_config

    try:
        return bool(load_config(_config_file(config), base=base).data.tickers)
    except ForecasterError:
        return True


def _json_ready(obj):
    """``obj`` with every NaN or infinite float as None: JSON has no such numbers, and a
    consumer's strict parser would refuse the whole document for one of them."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    return obj


def _emit_json(obj) -> None:
    text = json.dumps(_json_ready(obj), indent=2, default=str, allow_nan=False) + "\n"
    # printed from here on: a stop while the write waits on a full pipe must not add the error
    # object after what of the document got out (the exit code, 130, says it may be cut short)
    _Printed.json = True
    sys.stdout.write(text)


# ---- commands ---------------------------------------------------------------------------------
@app.command(cls=_Command)
def download(
    tickers: Annotated[
        list[str] | None,
        typer.Argument(
            help="Ticker symbols, e.g. AAPL BRK-B ^GSPC (default: data.tickers of --config).",
            metavar="TICKER",
            show_default=False,
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        _folder_option(
            "--data-dir", help="Store root: the bars go to <data-dir>/store/<TICKER>.parquet (default data/)."
        ),
    ] = None,
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
    setup_logging(quiet, log_file, json_out)
    with handled(debug, "download", json_out):
        from .config import load_config
        from .store import download as do_download
        from .tickers import validate_ticker

        _refuse_empty(data_dir=data_dir)
        config_file = _config_file(config)
        cfg = load_config(config_file, {"data.data_dir": data_dir})
        # `download ""`: a usage error, as for train
        tickers = _tickers(None, tickers, lambda: bool(cfg.data.tickers)) or cfg.data.tickers
        if not tickers:
            raise typer.BadParameter("name the tickers, or give a --config that lists them", param_hint="TICKER")
        if cfg.data.source == "csv":  # the store is what the yahoo source reads
            log.warning(
                "%s has source = csv, which reads <data-dir>/<TICKER>.csv files; download fills the store "
                "%s, which only source = yahoo reads",
                config_file,
                Path(cfg.data.data_dir) / "store",
            )
        syms = list(dict.fromkeys(validate_ticker(t) for t in tickers))  # refuse a bad symbol before any work
        rep = do_download(syms, cfg.data.data_dir, lock_timeout=lock_timeout, calendar=cfg.data.calendar)
        for line in rep.failure_lines():
            log.error("%s", line)
        if rep.failed and not rep.ok:  # failed as a whole: --json's error object, as predict's
            _failed(json_out, rep.exit_code, "%s", rep.summary(), extra={"failed": dict(rep.failed)})
            raise typer.Exit(rep.exit_code)
        if json_out:
            _emit_json(rep.as_dict())
        elif not quiet:
            _table(
                ["ticker", "rows", "first", "last", "added"],
                [[s, r.rows, str(r.first)[:10], str(r.last)[:10], r.added] for s, r in rep.ok.items()],
            )
        if rep.failed:
            log.error("%s", rep.summary())
        raise typer.Exit(rep.exit_code)


TrainModeOpt = Annotated[
    TrainMode | None,
    typer.Option(
        "--train-mode",
        help="forking (the encoder runs once over a stretch of history, a loss at every forecast origin; "
        "the default) or window (one pass per window).",
        parser=_one_of(TrainMode),
    ),
]
ChunkOpt = Annotated[
    int | None,
    typer.Option(
        min=1, metavar="<int>", help="Forking mode: forecast origins per stretch (after lookback - 1 rows of burn-in)."
    ),
]
EpochStepsOpt = Annotated[
    int | None,
    typer.Option(
        min=0,
        metavar="<int>",
        help="Forking mode: most steps per epoch; beyond, each step takes more origins (0: no limit).",
    ),
]
BurnInGradOpt = Annotated[
    bool | None,
    typer.Option(
        "--burn-in-grad/--no-burn-in-grad",
        help="Forking mode: backpropagate through each stretch's burn-in rows too, or only through its chunk's.",
        show_default=False,
    ),
]
BurnInDropoutOpt = Annotated[
    bool | None,
    typer.Option(
        "--burn-in-dropout/--no-burn-in-dropout",
        help="Forking mode, burn-in without gradient: apply the dropout between layers to the burn-in rows too, "
        "or set the chunk's starting state without dropout, as inference does (the default).",
        show_default=False,
    ),
]
BurnInAheadOpt = Annotated[
    bool | None,
    typer.Option(
        "--burn-in-ahead/--no-burn-in-ahead",
        help="Forking mode, burn-in without gradient or dropout: compute each step's burn-in during the step "
        "before, from the weights before that step's update, on a second core where there is one (the "
        "default), or after the update, in turn.",
        show_default=False,
    ),
]
HalvesOpt = Annotated[
    bool | None,
    typer.Option(
        "--halves/--no-halves",
        help="Window mode on a CPU with --threads 1: compute each batch in two halves, side by side "
        "(the default), or whole, on one core.",
        show_default=False,
    ),
]
CheckpointEveryOpt = Annotated[
    float | None,
    typer.Option(
        metavar="<seconds>",
        help="Save a new run as a resumable checkpoint every this many seconds of training, so that a process "
        "killed outright (kill -9, out of memory, a power cut) can be resumed from the last one with --resume "
        "(default 60; 0: no checkpoints). A run already in --run-dir is only replaced once training ends.",
    ),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        min=0,
        metavar="<int>",
        help="torch CPU threads (default 1; with 1, window training on a CPU computes each batch in two halves, "
        "side by side where two cores are usable; 0: one per core this process may use).",
    ),
]


@app.command(cls=_Command)
def train(
    tickers_arg: ExtraTickers = None,
    tickers: TickersOpt = None,
    config: ConfigOpt = None,
    source: SourceOpt = None,
    data_dir: DataDirOpt = None,
    model: Annotated[Cell | None, typer.Option("--model", help="Recurrent encoder.", parser=_one_of(Cell))] = None,
    strategy: Annotated[
        Strategy | None,
        typer.Option(
            help="direct (one head emits all H steps) or recursive (one step, rolled forward).",
            parser=_one_of(Strategy),
        ),
    ] = None,
    lookback: Annotated[int | None, typer.Option(help="Sessions of history per window.")] = None,
    horizon: Annotated[int | None, typer.Option(help="Sessions to forecast ahead.")] = None,
    hidden_size: Annotated[int | None, typer.Option(help="Hidden units per layer.")] = None,
    num_layers: Annotated[int | None, typer.Option(help="Stacked recurrent layers.")] = None,
    dropout: Annotated[float | None, typer.Option(help="Dropout between layers and before the head.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs (early stopping may end sooner).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Forecast origins (windows) per optimisation step.")] = None,
    patience: Annotated[
        int | None, typer.Option(help="Epochs without validation improvement before stopping early.")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="AdamW learning rate.")] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="Random seed: the same seed, data and --threads train the same model on one kind of CPU."),
    ] = None,
    val_days: Annotated[int | None, typer.Option(help="Sessions in the validation split.")] = None,
    test_days: Annotated[int | None, typer.Option(help="Sessions in the held-out test split.")] = None,
    device: Annotated[
        Device | None,
        typer.Option(help="Where to train (auto: CUDA, then MPS, then CPU).", parser=_one_of(Device)),
    ] = None,
    precision: Annotated[
        Precision | None, typer.Option(help="fp32, or bf16 autocast on CUDA.", parser=_one_of(Precision))
    ] = None,
    train_mode: TrainModeOpt = None,
    chunk: ChunkOpt = None,
    epoch_steps: EpochStepsOpt = None,
    burn_in_grad: BurnInGradOpt = None,
    burn_in_dropout: BurnInDropoutOpt = None,
    burn_in_ahead: BurnInAheadOpt = None,
    halves: HalvesOpt = None,
    checkpoint_every: CheckpointEveryOpt = None,
    threads: ThreadsOpt = None,
    run_dir: Annotated[
        Path | None,
        _folder_option(
            help="Where to write the run (default runs/<model>-<timestamp>): new, empty or an earlier run that "
            "no promoted name points at, replaced whole."
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        _folder_option(help="Continue an interrupted run (its config, with any flags given here on top)."),
    ] = None,
    lock_timeout: LockOpt = 0.0,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    log_file: LogFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Train one global model over the tickers; write a run directory.

    Tickers come from --tickers, trailing arguments or the config file. The run directory holds
    model.safetensors, run.json and history.csv. Ctrl-C or SIGTERM saves a resumable run and
    exits 130 (continue it with --resume). A new run is also saved resumable every
    --checkpoint-every seconds while it trains, for a process killed outright.
    """
    if resume is not None and run_dir is not None and _resolved(run_dir) != _resolved(resume):
        raise typer.BadParameter(
            f"a resumed run is written back to its own directory ({resume}), not to {run_dir}; "
            "leave --run-dir out (or copy the run there first and resume the copy)",
            param_hint="'--run-dir' with '--resume'",
        )
    target, whose = resume if resume is not None else run_dir, ""
    if log_file is not None and target is None:  # the run directory the config file names, if any
        target, whose = _configured_run_dir(config, locals()), " (the config's run_dir)"
    _refuse_log_inside(log_file, target, whose)
    setup_logging(quiet, log_file, json_out)
    options = locals()
    with handled(debug, "train", json_out):
        bar = ExitStack()  # the progress bar, made before training as its import takes a moment
        try:  # torch's import takes a second or two: a stop in it is said as training's own
            from .checkpoint import read_manifest
            from .config import load_config
            from .training import Dist, Interrupted
            from .training import train as do_train

            _refuse_empty(run_dir=run_dir, resume=resume)
            base = None
            if resume is not None:
                base = read_manifest(resume).config.model_dump(mode="json")
                options["run_dir"] = resume
            given = _tickers(tickers, tickers_arg, lambda: _config_lists_tickers(config, base))
            cfg = load_config(_config_file(config), overrides(options, given), base=base)
            _job_environment()
            main_rank = Dist().main
            show = _bar_shown() and not quiet and not json_out and main_rank
            on_epoch, on_batch = bar.enter_context(_progress(show, cfg.train.epochs))
        except KeyboardInterrupt:
            bar.close()
            raise _training_stopped_starting(json_out, resume, run_dir) from None
        try:
            with bar:
                res = do_train(
                    cfg,
                    run_dir=cfg.run_dir,
                    on_epoch=on_epoch if main_rank else None,
                    on_batch=on_batch,
                    lock_timeout=lock_timeout,
                    resume=resume is not None,
                )
        except Interrupted as e:  # --json still says what the run left, then exit 130
            if json_out and main_rank:
                _show_interrupted_training(e)
            raise
        if res.manifest is not None:  # None: another rank of a distributed job writes the run
            _show_training(res, quiet, json_out)


def _resolved(path: Path) -> Path:
    """``path`` with ``..`` and links resolved; absolute only, where a link loops."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):  # a link loop: the command names it once it opens the path
        return Path(path).absolute()


def _refuse_log_inside(log_file: Path | None, target: Path | None, whose: str = "", what: str = "") -> None:
    """A usage error when ``log_file`` is inside the run directory ``target``, which the run
    replaces whole (``..`` and links resolved: ``runs/a/../b`` is ``runs/b``); ``what``: the
    folder ``target`` is and what replaces it, when not a run directory and the run."""
    if log_file is not None and target is not None and _resolved(target) in _resolved(log_file).parents:
        what = what or f"the run directory {target}{whose}, which the run replaces whole"
        raise typer.BadParameter(
            f"the log file {log_file} is inside {what} (the log would be lost with it); write the log elsewhere",
            param_hint="'--log-file'",
        )


def _configured_run_dir(config: list[Path] | None, options: dict) -> Path | None:
    """The run directory ``train`` writes when no ``--run-dir`` is given: the config's
    ``run_dir``. None without one (a new folder named after the time is made then) or when the
    config cannot be read, whose error the command then reports with its log set up."""
    from .config import load_config

    try:
        tickers = _tickers(options["tickers"], options["tickers_arg"])
        return load_config(_config_file(config), overrides(options, tickers)).run_dir
    except Exception:
        return None


def _tune_best_dir(config: list[Path] | None, options: dict) -> Path | None:
    """Where ``tune --train-best`` writes the best run; None when the config cannot be read,
    whose error the command then reports with its log set up."""
    from .config import load_config
    from .tuning import best_run_dir

    if options["run_dir"] is not None:
        return Path(options["run_dir"])
    try:
        study = {"tune.study": options["study"]} if options["study"] is not None else {}
        return best_run_dir(load_config(_config_file(config), study))
    except Exception:
        return None


_JOB_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


def _job_number(name: str, least: int) -> int | None:
    """The whole number in the environment variable ``name`` (None when unset), at least
    ``least``; otherwise a ConfigError naming the variable."""
    raw = os.environ.get(name)
    if raw is None:
        return None
    try:
        value = int(raw.strip(), 10)
    except ValueError:
        value = None
    if value is None or value < least:
        raise ConfigError(
            f"environment variable {name}={raw!r} is not a whole number of at least {least}: torchrun sets "
            "WORLD_SIZE, RANK and LOCAL_RANK for each process of a distributed training (unset them to "
            "train in one process)"
        )
    return value


def _job_environment() -> None:
    """Check the variables through which torchrun makes ``train`` one process of a distributed
    job, before training reads them: one that is not a whole number, a world of no process, a
    rank outside it, or a job without the address its processes meet at is a ConfigError naming
    the variable (it was a ValueError, a validation error or a division by zero from deep in
    training, or, for a rank past the last, a wait for a process that never comes)."""
    for name in _JOB_VARIABLES:
        if os.environ.get(name) == "":  # empty: unset, as the entry point reads it
            del os.environ[name]
    world = _job_number("WORLD_SIZE", 1)
    if world is None or world == 1:
        _job_number("RANK", 0)
        _job_number("LOCAL_RANK", 0)
        return
    rank = _job_number("RANK", 0)
    if rank is None or rank >= world:
        shown = "unset" if rank is None else f"{rank}"
        raise ConfigError(
            f"environment variable RANK is {shown} where WORLD_SIZE={world}: each process of a distributed "
            f"training has a RANK from 0 to {world - 1} (start it with torchrun, or unset WORLD_SIZE to train in one "
            "process)"
        )
    _job_number("LOCAL_RANK", 0)
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name, "").strip()]
    if missing:
        raise ConfigError(
            f"environment {'variables' if len(missing) > 1 else 'variable'} {' and '.join(missing)} unset where "
            f"WORLD_SIZE={world}: the processes of a "
            "distributed training meet at MASTER_ADDR:MASTER_PORT (start it with torchrun, or unset WORLD_SIZE "
            "to train in one process)"
        )
    port = os.environ["MASTER_PORT"]
    if not port.strip().isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"environment variable MASTER_PORT={port!r} is not a port number (1 to 65535)")


def _training_doc(run_dir: Path, man) -> dict:
    """train --json's account of the run ``man`` (its manifest) at ``run_dir``."""
    doc = {"run_dir": str(run_dir), "name": man.name, **man.metrics.model_dump(mode="json")}
    return {
        **doc,
        "windows": man.windows,
        "skipped": man.skipped,
        "no_validation": {sym: why.model_dump(mode="json") for sym, why in man.no_validation.items()},
    }


def _training_stopped_starting(json_out: bool, resume: Path | None, run_dir: Path | None) -> KeyboardInterrupt:
    """train stopped while it started (torch imported, the config read), before any data were
    read: the line that says so (nothing written; a resumed run as it was), with --json its
    result as an interrupted training's, printed here; returned for the caller to raise."""
    from .entry import other_training_rank

    if resume is not None:  # checkpoint.resume_command's words; no module imported now
        then = f"continue with `forecaster train --resume {shlex.quote(str(resume))}`"
    else:
        then = "run the same command again"
    line = f"training interrupted while it started, before the data were read: nothing was written; {then}"
    if json_out and not other_training_rank("train"):
        where = resume if resume is not None else run_dir
        doc = {"run_dir": None if where is None else str(where), "resumable": resume is not None}
        _emit_json(doc | {"interrupted": True, "message": line})
    return KeyboardInterrupt(line)


def _show_interrupted_training(e) -> None:
    """train --json when training was interrupted: what the saved run holds, whether
    `train --resume` can continue it, and the line (also on stderr) as ``message``."""
    from .checkpoint import read_manifest

    if e.details.get("run_dir") is None:  # stopped before its folder was named (one named after the time)
        _emit_json({"run_dir": None, "resumable": False, "interrupted": True, "message": str(e)})
        return
    run_dir = Path(e.details["run_dir"])
    doc = {"run_dir": str(run_dir), "name": run_dir.name}  # the run could not be saved: its place, and no more
    # a run left there that this training did not save, or could not resume, is not its result
    if e.details.get("saved") is not False or e.details.get("resumable"):
        with suppress(ForecasterError, OSError):
            doc = _training_doc(run_dir, read_manifest(run_dir))
    _emit_json(doc | {"resumable": bool(e.details.get("resumable")), "interrupted": True, "message": str(e)})


def _training_line(res) -> str:
    """The result of a training, in one line."""
    m = res.manifest.metrics
    one = " (one step ahead)" if res.manifest.config.model.strategy == "recursive" else ""
    return (
        f"run written to {shown_path(res.run_dir)}  (best epoch {m.best_epoch} of {m.epochs_run}, "
        f"validation pinball{one} {m.best_val_loss:.4f}, {m.train_seconds:.1f} s)"
    )


def _show_training(res, quiet: bool, json_out: bool, logged: bool = False) -> None:
    line = _training_line(res)
    if not logged:  # the result, for --log-file: stdout has it, or the document
        log.info("%s", line, extra={RESULT: True})
    if json_out:
        _emit_json(_training_doc(res.run_dir, res.manifest) | {"interrupted": False})
    elif not quiet:
        print(line)


def _log_epoch(r, on_bar: bool = False) -> None:
    """The epoch's line in the log; ``on_bar``: the progress bar shows it, so stderr does not."""
    extra = {ON_BAR: True} if on_bar else None
    msg = "epoch %d: train %.4f  val %.4f  grad-norm %.3f  lr %.2g  %.1fs"
    log.info(msg, r.epoch, r.train_loss, r.val_loss, r.grad_norm, r.lr, r.seconds, extra=extra)


MIN_BAR = 10
"""Cells a progress bar keeps at least; on a terminal too narrow for them, it is left out."""


@contextmanager
def _progress_bar(*columns, **kwargs):
    """A rich progress bar on stderr, drawn with ``columns`` as long as its line fits the
    terminal. On a narrower one the bar itself is left out and the figures wrap onto more
    lines, whole: rich cut them with an ellipsis (a loss of "0.28…", the trials done gone).
    Log lines meanwhile go above it, each on one line (:class:`_CurrentStderr`)."""
    from rich.measure import Measurement
    from rich.progress import BarColumn, Progress
    from rich.table import Column, Table

    class Fitted(Progress):
        def make_tasks_table(self, tasks):
            tasks = list(tasks)
            table = super().make_tasks_table(tasks)
            if not hasattr(self, "live"):  # drawn once as the bar is made, with no task yet
                return table
            kept = [c for c in self.columns if not isinstance(c, BarColumn)]
            figures = Table.grid(*(Column(overflow="fold") for _ in kept), padding=(0, 1))
            for task in tasks:
                if task.visible:
                    figures.add_row(*(c.format(task=task) if isinstance(c, str) else c(task) for c in kept))
            console = self.console
            line = Measurement.get(console, console.options.update_width(1 << 20), figures).maximum
            bars = len(self.columns) - len(kept)
            # rich narrows the bar to fit: while it can keep a few cells, the line is whole
            return table if line + bars * (1 + MIN_BAR) <= console.width else figures

    with Fitted(*columns, console=_stderr_console(), **kwargs) as bar:
        _CurrentStderr.bar = bar.console
        try:
            yield bar
        finally:
            _CurrentStderr.bar = None


@contextmanager
def _progress(show: bool, epochs: int):
    """A rich progress bar on a terminal; plain log lines per epoch otherwise (and in the log
    file, bar or not)."""
    if not show:
        yield _log_epoch, None
        return
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

    with _progress_bar(
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        transient=False,
    ) as bar:
        task = bar.add_task("train", total=None, epoch=1, status="")
        last = []  # the epoch just ended, until the next one's first step

        def on_batch(n):
            if last:  # the bar moves on to the next epoch only once that one trains
                bar.update(task, epoch=last.pop().epoch + 1, completed=0)
            bar.advance(task, n)

        def on_epoch(r):
            last[:] = [r]
            _log_epoch(r, on_bar=True)
            # whole, at the epoch it ended: the bar reads that while the run is finished
            # (calibration, baselines, writing), where no next epoch will run
            bar.update(
                task,
                epoch=r.epoch,
                completed=r.samples,
                total=r.samples,
                status=f"train {r.train_loss:.4f} val {r.val_loss:.4f}",
            )

        yield on_epoch, on_batch


# tune-only option -> config key
TUNE_OVERRIDES = {"trials": "tune.trials", "timeout": "tune.timeout", "study": "tune.study", "storage": "tune.storage"}


def tune(
    tickers_arg: ExtraTickers = None,
    tickers: TickersOpt = None,
    config: ConfigOpt = None,
    trials: Annotated[
        int | None, typer.Option(min=1, metavar="<int>", help="Trials this process adds to the study (default 20).")
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(min=0, metavar="<float>", help="Start no new trial after this many seconds (0: no limit)."),
    ] = None,
    study: Annotated[
        str | None, typer.Option(help="Study name: runs/tune/<study>.db and runs/tune/<study>/ (default 'default').")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Optuna storage shared by several processes or machines: journal:FILE, "
            "postgresql://..., mysql://..., sqlite:///FILE, redis://..., grpc://HOST:PORT "
            "(default: the SQLite file runs/tune/<study>.db)."
        ),
    ] = None,
    train_best: Annotated[
        bool, typer.Option("--train-best", help="Train the best configuration into --run-dir when the search ends.")
    ] = False,
    run_dir: Annotated[
        Path | None,
        _folder_option(help="Where --train-best writes the run, and best.toml's run_dir (default runs/<study>-best)."),
    ] = None,
    lock_timeout: LockOpt = 0.0,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    log_file: LogFileOpt = None,
    debug: DebugOpt = False,
    **train_flags,
) -> None:
    """Search hyper-parameters with Optuna on the validation loss; never looks at the test split.

    Each trial trains a model (every train option fixes a value and takes it out of the search;
    --epochs is each trial's budget, --seed each trial's training seed) and is scored by its best
    validation pinball loss. The study is kept in runs/tune/<study>.db (or --storage), so the
    same command continues it after an interruption (Ctrl-C or SIGTERM exits 130); the results
    go to runs/tune/<study>/ (trials.csv, best.toml, history.png).
    """
    if train_best and log_file is not None:
        best, whose = _tune_best_dir(config, locals()), " (where --train-best writes the best run)"
        _refuse_log_inside(log_file, best, whose)
    setup_logging(quiet, log_file, json_out)
    options = locals()
    with handled(debug, "tune", json_out):
        from .checkpoint import check_run_target
        from .config import load_config
        from .training import Interrupted
        from .tuning import SearchInterrupted, best_run_dir
        from .tuning import train_best as do_train_best
        from .tuning import tune as do_tune

        _refuse_empty(run_dir=run_dir)
        fixed = {k: v for k, v in overrides(train_flags).items() if k != "data.tickers"}
        tuned = {key: _val(options[opt]) for opt, key in TUNE_OVERRIDES.items()}
        given = _tickers(tickers, tickers_arg, lambda: _config_lists_tickers(config))
        cfg = load_config(_config_file(config), {**fixed, **tuned, "data.tickers": given})
        if train_best:  # a place the run cannot go is refused before the search, not after it
            best = best_run_dir(cfg, run_dir)
            _refuse_best_over_studies(best)
            check_run_target(best)
        show = _bar_shown() and not quiet and not json_out
        try:
            with _tune_progress(show, cfg.tune.trials) as (on_epoch, on_trial):
                res = do_tune(
                    cfg,
                    fixed=fixed,
                    run_dir=run_dir,
                    on_epoch=on_epoch,
                    on_trial=on_trial,
                    best_lock_timeout=lock_timeout if train_best else None,  # nor one another run holds
                )
        except SearchInterrupted as e:  # --json still says what the study keeps, then exit 130
            if json_out:
                _show_tuning(e.result, None, quiet, json_out, interrupted=str(e))
            raise
        final = None
        if train_best:
            try:
                with _progress(show, res.best.config.train.epochs if res.best else 1) as (on_epoch, on_batch):
                    on_epoch = on_epoch if show else None  # no epoch lines on cron either
                    final = do_train_best(res, on_epoch=on_epoch, on_batch=on_batch, lock_timeout=lock_timeout)
            except Interrupted as e:  # the search is whole; the best run was saved resumable
                if json_out:
                    _show_tuning(res, None, quiet, json_out, interrupted=str(e), run_dir=res.best.config.run_dir)
                raise
        _show_tuning(res, final, quiet, json_out)


@contextmanager
def _tune_progress(show: bool, trials: int):
    """On a terminal, a bar over the trials with the running epoch and the best loss; nothing
    otherwise (cron sees only warnings, errors and the result)."""
    if not show:
        yield None, None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    with _progress_bar(
        TextColumn("tuning"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    ) as bar:
        task = bar.add_task("tune", total=trials, status="")
        best = {"value": None}

        def best_text():
            return "" if best["value"] is None else f"  best {best['value']:.5f}"

        def on_epoch(number, rec):
            bar.update(task, status=f"trial {number} epoch {rec.epoch} val {rec.val_loss:.5f}{best_text()}")

        def on_trial(trial, best_value):
            best["value"] = best_value
            bar.update(task, advance=1, status=f"trial {trial.number} {trial.state.name.lower()}{best_text()}")

        yield on_epoch, on_trial


def _show_tuning(res, final, quiet: bool, json_out: bool, interrupted: str | None = None, run_dir=None) -> None:
    """The study's result; ``interrupted``: the line of an interrupted command (--json only: the
    line itself goes to stderr), ``run_dir`` the resumable run an interrupted --train-best left."""
    counts = res.counts()
    run_dir = final.run_dir if final is not None else run_dir
    summary = f"study {res.study} ({res.storage}): {res.added} trial(s) run now; in all " + ", ".join(
        f"{v} {k}" for k, v in counts.items()
    )
    best = None
    if res.best is not None:
        params = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in res.best.params.items())
        best = f"best trial {res.best.number}: validation pinball {res.best.value:.5f} ({params})"
    if interrupted is None:  # the result, for --log-file
        log.info("%s%s", summary, f"; {best}" if best else "", extra={RESULT: True})
        if final is not None:
            log.info("%s", _training_line(final), extra={RESULT: True})
    if json_out:
        doc = {
            "study": res.study,
            "storage": res.storage,
            "added": res.added,
            "trials": counts,
            "best": None
            if res.best is None
            else {"number": res.best.number, "value": res.best.value, "params": res.best.params},
            "files": {k: str(v) for k, v in res.files.items()},
            "run_dir": None if run_dir is None else str(run_dir),
            "interrupted": interrupted is not None,
        }
        _emit_json(doc | ({"message": interrupted} if interrupted else {}))
        return
    if quiet:
        return
    print(summary)
    if best is not None:
        print(best)
    for k, v in res.files.items():
        print(f"{k}: {shown_path(v)}")
    if final is not None:
        _show_training(final, quiet, json_out, logged=True)


FailIfNoSkillOpt = Annotated[
    bool, typer.Option("--fail-if-no-skill", help="Exit 1 unless the model beats naive significantly at every step.")
]
AlphaOpt = Annotated[
    float, typer.Option(help="Significance level of the skill verdict.", min=0, metavar="<float>", max=1)
]


@app.command(cls=_Command)
def evaluate(
    run: RunOpt,
    tickers_arg: ExtraTickers = None,
    tickers: TickersOpt = None,
    source: RunSourceOpt = None,
    data_dir: RunDataDirOpt = None,
    plot: Annotated[
        bool | None,
        typer.Option(
            "--plot/--no-plot",
            help="Write eval/plots/<TICKER>.png and training.png (default: for a run of at most 20 tickers).",
            show_default=False,
        ),
    ] = None,
    fail_if_no_skill: FailIfNoSkillOpt = False,
    alpha: AlphaOpt = 0.05,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            "-j",
            min=0,
            metavar="<int>",
            help="Processes sharing the tickers (0: one per core this process may use).",
        ),
    ] = 0,
    lock_timeout: LockOpt = 0.0,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    log_file: LogFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Backtest a run walk-forward on its test split against baselines.

    Writes DIR/eval/metrics.csv, DIR/eval/predictions.csv, DIR/eval/lag.csv and plots (up to 20
    tickers), prints a table and says plainly whether the model beats the naive forecast. Exit 3
    if some tickers' bars could not be read (named; the rest are evaluated and written), 75 if
    the run is locked (being trained, or evaluated by another process).
    """
    if log_file is not None:
        from .checkpoint import run_directory

        with suppress(ForecasterError, OSError):  # no run there: the command says so
            out, shown = run_directory(run) / "eval", Path(run) / "eval"  # shown as named (a promoted name too)
            _refuse_log_inside(log_file, out, what=f"the evaluation folder {shown}, which evaluate replaces whole")
    setup_logging(quiet, log_file, json_out)
    with handled(debug, "evaluate", json_out):
        from .evaluation import evaluate as do_evaluate
        from .tickers import log_some

        _refuse_empty(run=run, data_dir=data_dir)
        rep = do_evaluate(
            run,
            source=_val(source),
            data_dir=data_dir,
            tickers=_tickers(tickers, tickers_arg),
            plot=plot,
            jobs=jobs,
            lock_timeout=lock_timeout,
        )
        ok, verdict = rep.verdict(alpha)
        intervals_ok, interval_verdict = rep.interval_verdict(alpha)
        # the result, for --log-file (stdout has the verdicts, or the document)
        log.info("evaluated run %s: %s %s", rep.run, verdict, interval_verdict, extra={RESULT: True})
        if json_out:
            _emit_json(
                {
                    "run": rep.run,
                    "beats_naive": ok,
                    "verdict": verdict,
                    "beats_volatility_baselines": intervals_ok,
                    "interval_verdict": interval_verdict,
                    "missing": rep.missing,
                    "files": {k: str(v) for k, v in rep.files.items()},
                    "lag": json.loads(rep.lag.to_json(orient="records")),
                    "metrics": json.loads(rep.metrics.to_json(orient="records")),
                }
            )
        elif not quiet:
            _print_metrics(rep)
            print(verdict)
            print(interval_verdict)
            for k, v in rep.files.items():
                print(f"{k}: {shown_path(v)}")
        failed = [f"{sym} not evaluated: {why['error']}" for sym, why in rep.failed.items()]
        log_some(logging.ERROR, failed, "tickers not evaluated")
        if fail_if_no_skill and not ok:
            log.error("no skill over the naive forecast: %s", verdict)
            raise typer.Exit(1)
        raise typer.Exit(rep.exit_code)


def _print_metrics(rep) -> None:
    """One row per ticker and step: the median against naive, and the skill of the drift and mean
    baselines beside it; the intervals against the best volatility baseline (lowest pinball
    loss among hist, ewma, garch)."""
    m = rep.metrics
    by = {(r.ticker, r.model, r.step): r for r in m.itertuples(index=False)}

    rows = []
    for r in m[m["model"] == rep.model].itertuples(index=False):
        best = r.best_vol if isinstance(r.best_vol, str) else None  # none: too little history for any
        rows.append(
            [
                r.ticker,
                r.step,
                r.n,
                _cell(r.mae),
                _cell(r.skill, "+.2%"),
                _cell(r.dm_pvalue, ".3f"),
                _cell(by[(r.ticker, "drift", r.step)].skill, "+.2%"),
                _cell(by[(r.ticker, "mean", r.step)].skill, "+.2%"),
                _cell(r.coverage, ".1%"),
                _cell(r.kupiec_pvalue, ".2f"),
                _cell(r.pinball_ratio, ".3f") + f" {best}" if best is not None else "",
                _cell(r.dm_pinball_pvalue, ".3f"),
            ]
        )
    columns = ["ticker", "step", "n", "MAE", "skill", "DM p", "skill drift", "skill mean"]
    columns += ["coverage", "Kupiec p"]
    columns += ["pinball / best vol", "DM p (pinball)"]
    title = f"walk-forward test metrics of {rep.model} (run {rep.run}); skill = 1 - MAE/MAE naive"
    _table(columns, rows, title=title)
    gated = bool(rep.median_weight) and rep.median_weight[0] == 0
    for r in rep.lag.itertuples(index=False):
        if r.copies_last_value:
            why = " (by design: its one-step median is the last close, see below)" if gated else ""
            print(
                f"{r.ticker}: the median forecast moves with the last close (slope {r.slope:.2f}, "
                f"R^2 {r.r2:.2f}): it is essentially the last value shifted forward{why}"
            )


@app.command(cls=_Command)
def predict(
    run: RunOpt,
    tickers_arg: ExtraTickers = None,
    tickers: TickersOpt = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Forecast as if today were DATE (YYYY-MM-DD), using bars up to it; the forecast is dated by "
            "the last of them (a weekend or holiday gives the session before it).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        _folder_option(help="Folder for forecast CSVs (default: the run's predict.out, forecasts/ unless set)."),
    ] = None,
    offline: Annotated[bool, typer.Option("--offline", help="Never touch the network; use the store.")] = False,
    source: RunSourceOpt = None,
    data_dir: RunDataDirOpt = None,
    max_staleness: Annotated[
        int | None,
        typer.Option(
            min=0,
            metavar="<int>",
            help="Sessions a stored bar may lag when the refresh fails "
            "(default: the run's predict.max_staleness, 3 unless set).",
        ),
    ] = None,
    lock_timeout: LockOpt = 0.0,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            "-j",
            min=0,
            metavar="<int>",
            help="Processes sharing the tickers (0: one per core this process may use, and only where each "
            "gets at least 100 tickers).",
        ),
    ] = 0,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    log_file: LogFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Forecast the next trading sessions and write the forecast CSV.

    Writes OUT/<run>/<as_of>.csv and OUT/<run>/latest.csv (kept as it is when it holds a later
    day's forecast). Exit 3 if some tickers failed (the rest are written), 75 if the network is
    down and no usable local data is left, or another predict of the run holds its forecast
    folder's lock.
    """
    setup_logging(quiet, log_file, json_out)
    with handled(debug, "predict", json_out):
        from .prediction import predict as do_predict
        from .tickers import log_some

        _refuse_empty(run=run, out=out, data_dir=data_dir)
        if max_staleness is not None:
            _unused_staleness(run, offline, _val(source))
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
            jobs=jobs,
        )
        _show_forecast(rep, quiet, json_out)
        log_some(logging.ERROR, [f"{sym} failed: {reason}" for sym, reason in rep.failed.items()], "failed tickers")
        raise typer.Exit(rep.exit_code)


def _unused_staleness(run: Path, offline: bool, source: str | None) -> None:
    """A warning for ``--max-staleness`` where it has nothing to limit: it is how far behind a
    stored bar may be when the refresh of the store fails, and with ``--offline``, or a csv
    source (read as the files are, never refreshed), there is no refresh. It was silently
    ignored, and a cron job that gave it to refuse old bars forecast from any."""
    given = source is not None
    if not offline and not given:
        from .checkpoint import read_manifest

        try:
            source = read_manifest(run).config.data.source
        except Exception:  # no run there: predict says so next
            return
    if offline or source == "csv":
        csv = "--source csv" if given else "the run's csv source"
        why = "--offline, which never refreshes the store" if offline else f"{csv}, whose files are not refreshed"
        log.warning(
            "--max-staleness has no effect with %s: the bars are used however old they are (predict says how "
            "old their last one is)",
            why,
        )


def _show_forecast(rep, quiet: bool, json_out: bool) -> None:
    # its warnings and notes are logged by predict itself; the result, for --log-file (stdout
    # has the table, or the document): each forecast leaves a line in the log
    log.info(
        "forecast %s of run %s as of %s: %s",
        _count(rep.forecasts["ticker"].nunique(), "ticker"),
        rep.run,
        rep.as_of,
        ", ".join(f"{k} {v}" for k, v in rep.files.items()),
        extra={RESULT: True},
    )
    if rep.recalibrated:
        log.info(
            "interval scales brought up to date with the outcomes of up to %d session(s) since the run's last bar",
            max(rep.recalibrated.values()),
        )
    if json_out:
        _emit_json(
            {
                "run": rep.run,
                "as_of": rep.as_of,
                "failed": rep.failed,
                "warnings": rep.warnings,
                "notes": rep.notes,
                "recalibrated": rep.recalibrated,
                "files": {k: str(v) for k, v in rep.files.items()},
                "forecasts": json.loads(rep.forecasts.to_json(orient="records")),
            }
        )
        return
    if quiet:
        return
    cols = ["ticker", "as_of", "step", "date", "last_close", "p10", "p50", "p90"]
    money = {"last_close", "p10", "p50", "p90"}
    rows = []
    for _, r in rep.forecasts.iterrows():
        places = _price_decimals(r["last_close"])
        rows.append([f"{r[c]:.{places}f}" if c in money else r[c] for c in cols])
    _table(cols, rows)
    for k, v in rep.files.items():
        print(f"{k}: {shown_path(v)}")


def _price_decimals(price: float) -> int:
    """Decimals that show ``price`` to four significant digits, and never fewer than two: a
    price under a dollar (a penny stock, an exchange rate) keeps the digits its quantiles
    differ in."""
    if not (math.isfinite(price) and price > 0):
        return 2
    return max(2, 3 - math.floor(math.log10(price)))


def _count(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is one: 1 forecast file, 4 forecast files."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with its control characters written as escapes (a newline as ``\\n``): a name
    holding one (a folder can) keeps to its own row of a table or line of a listing, and cannot
    move the terminal's cursor or change its colours."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def shown_path(path) -> str:
    """``path`` as a shell reads it back: as it is where it holds only the characters a shell
    leaves alone, else in single quotes; with a control character in it (a newline, an escape),
    in bash's ``$'...'`` with that character escaped, so that it keeps to its line and cannot
    move the terminal's cursor or change its colours."""
    text = str(path)
    if not _CONTROL.search(text):
        return shlex.quote(text)
    text = text.replace("\\", "\\\\").replace("'", "\\'")
    return "$'" + _CONTROL.sub(_c_escape, text) + "'"


def _c_escape(match) -> str:
    """A control character as ``$'...'`` writes it: ``\\n``, ``\\x1b``; ``\\u0085`` above ASCII."""
    c = match.group()
    return repr(c)[1:-1] if c < "\x80" else f"\\u{ord(c):04x}"


def _table(columns: list[str], rows: list[list], title: str | None = None) -> None:
    """A table on stdout; when stdout is not a terminal (a log file, a pipe), plain ASCII text
    without colour, its columns split by ``|``. It is never narrowed below the width of its
    cells, nor of its title: on a narrower terminal its lines wrap rather than lose digits to an
    ellipsis or break a path in two."""
    from rich import box
    from rich.cells import cell_len
    from rich.markup import escape
    from rich.measure import Measurement
    from rich.table import Table  # rich's table module is only needed once there is a table

    console = _stdout_console()
    title = None if title is None else printable(title)
    t = Table(
        *columns,
        title=None if title is None else escape(title),
        box=box.HEAVY_HEAD if sys.stdout.isatty() else box.ASCII2,
        # a title is wrapped at the table's width: one longer than a narrow table (`runs in` a
        # deep folder) had its path broken across lines, where it could not be pasted back
        min_width=None if title is None else cell_len(title),
    )
    for row in rows:  # as they are: a folder named "[red]x" is no markup
        t.add_row(*(escape(printable(str(v))) for v in row))
    needed = Measurement.get(console, console.options.update_width(1 << 20), t).maximum
    console.size = (max(console.width, needed), console.height)  # both: a dumb terminal ignores a width alone
    console.print(t)


@app.command(cls=_Command)
def info(
    run: Annotated[
        Path,
        typer.Argument(
            help="A run directory written by train, or a promoted name runs/NAME (shown with the run it points "
            "at): its model and training settings, data source and folder, splits, tickers with their date "
            "ranges, metrics, the pooled figures of its evaluation when there is one, and package versions "
            "are shown. A folder of runs (runs/) lists its runs instead: each one's status, model, best "
            "validation loss, and the promoted names that point at it.",
            file_okay=False,
            readable=False,  # one that cannot be read is the command's error (exit 1), not a usage error
            metavar="DIR",
            path_type=str,
            callback=_keep_empty,
        ),
    ],
    json_out: JsonOpt = False,
    log_file: LogFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Show a run: config, tickers, date ranges, metrics, versions; or list a folder of runs.

    Exit 1 when the run cannot be used (its weights missing, unreadable or not matching its
    config; an interrupted run that train --resume would refuse): what run.json tells is still
    shown, and why the run cannot be used.
    """
    setup_logging(False, log_file, json_out)
    with handled(debug, "info", json_out):
        from .checkpoint import read_manifest, run_directory, run_lock_path
        from .fsio import lock_holder
        from .registry import unfinished_advice, unusable_reason

        _refuse_empty(DIR=run)
        if (entries := _runs_in(Path(run))) is not None:
            _show_runs(Path(run), entries, json_out)
            return
        run_dir = run_directory(run)  # a promoted name resolved once, or named when its run is gone
        target = run_dir if run_dir != Path(run) else None
        m = read_manifest(run_dir)
        # what predict, evaluate and promote load (numpy: no torch), or the resume its line advises
        unusable = unusable_reason(run_dir, m)
        live = lock_holder(run_lock_path(run_dir)) if m.status != "complete" else None  # a checkpoint
        if json_out:
            pointer = {"pointer": {"name": run.name, "path": str(run), "target": str(target)}} if target else {}
            training = {"being_trained": live} if live else {}
            _emit_json(json.loads(m.to_json()) | pointer | training | ({"unusable": unusable} if unusable else {}))
            _refuse_unusable(unusable)
            return
        c = m.config
        if target is not None:
            _say(f"pointer    {run} -> {target}")
        _say(f"run        {m.name}  (format {m.format_version}, created {m.created_at.isoformat()})")
        if m.name != run_dir.resolve().name:  # moved or copied since: its forecasts keep the recorded name
            _say(f"moved      trained as {m.name}: its forecasts go to {Path(c.predict.out) / m.name}")
        if m.status != "complete" and not unusable:
            # the run directory itself: train refuses to write through a promoted name
            status = f"being trained (a checkpoint after epoch {m.metrics.epochs_run})" if live else m.status
            _say(f"status     {status}: {unfinished_advice(run_dir)}")
        if unusable:
            _say(f"status     cannot be used (predict and promote refuse it): {unusable}")
        mc = c.model
        _say(
            f"model      {mc.cell} / {mc.strategy}, hidden {mc.hidden_size} x "
            f"{mc.num_layers}, lookback {c.window.lookback}, horizon {c.window.horizon}"
        )
        scale = (
            f"local volatility (half-life {mc.scale_halflife})" if mc.target_scale == "local" else "ticker's volatility"
        )
        gate = {0.0: "off (always the last close)", 1.0: "off (always the network's)"}.get(
            mc.median_alpha, f"p < {mc.median_alpha}"
        )
        _say(
            f"           targets in units of the {scale}, AR terms {mc.ar_order}, "
            f"ticker embedding {mc.embedding_dim}, median gate {gate}"
        )
        _say(f"data       {c.data.source} from {c.data.data_dir}, calendar {c.data.calendar}, hash {m.data_hash[:16]}")
        t = c.train
        device = m.device if t.device == m.device else f"{m.device} (--device {t.device})"
        autocast = t.precision == "bf16" and m.device.startswith("cuda")  # bf16 is autocast on CUDA only
        precision = "bf16" if autocast else "fp32" if t.precision == "fp32" else "fp32 (bf16 asked: CUDA only)"
        _say(
            f"training   {t.mode}, epochs {t.epochs} (patience {t.patience}), batch {t.batch_size}, lr {t.lr}, "
            f"weight decay {t.weight_decay}, dropout {c.model.dropout}, seed {t.seed}, device {device}, {precision}"
        )
        if t.mode == "forking":
            steps = f"at most {t.epoch_steps} steps an epoch" if t.epoch_steps else "no limit on the steps an epoch"
            _say(f"           chunk {t.chunk}, {steps}")
        if mc.strategy == "recursive":
            _say(
                "           a recursive run trains and validates its one-step forecasts: "
                "its validation loss is one step's"
            )
        track = c.intervals
        tracked = (
            f"tracking rate {track.tracking_rate} ({track.step_tracking})" if track.tracking_rate else "tracking off"
        )
        _say(f"intervals  {tracked}, volatility half-life {track.vol_halflife}")
        _say(f"predict    forecasts to {c.predict.out}/, stored bars at most {c.predict.max_staleness} sessions old")
        windows = ", ".join(f"{k} {v}" for k, v in m.windows.items())
        _say(f"splits     validation from {m.splits.val_start}, test from {m.splits.test_start}; windows {windows}")
        for s, t in m.tickers.items():
            _say(f"ticker     {s}: {t.first_date} .. {t.last_date} ({t.rows} bars)")
        for s, why in m.skipped.items():
            _say(f"skipped    {s}: {why}")
        for s, why in m.no_validation.items():
            if why.last_date >= m.splits.test_start:
                _say(f"no val.    {s}: too few bars in the validation split (a gap in them); bars end {why.last_date}")
                continue
            when = "before" if why.last_date < why.split_start else "too soon after the start of"
            _say(f"no val.    {s}: bars end {why.last_date}, {when} the validation split ({why.split_start})")
        _say("metrics    " + ", ".join(f"{k} {_figure(v)}" for k, v in m.metrics.model_dump().items()))
        if m.origin is not None:
            o = m.origin
            _say(
                f"origin     tuning study {o.study}, trial {o.trial} (validation pinball {o.val_loss:.5f}, "
                f"storage {o.storage})"
            )
        evaluation = Path(run if target is None else target) / "eval" / "metrics.csv"
        if evaluation.exists():
            _say(f"evaluation {evaluation}")
            for line in _evaluation_lines(evaluation, c.model.cell, list(m.tickers)):
                _say(f"           {line}")
        _say("versions   " + ", ".join(f"{k} {v}" for k, v in m.versions.items()))
        _refuse_unusable(unusable)


def _runs_in(path: Path) -> list | None:
    """The rows of :func:`~forecaster.registry.list_runs` when ``path`` is a folder of runs for
    ``info`` to list: a directory (or a link to one) with no run.json, that no training is
    writing as a run, and that holds a run or a training's folder, not only links. None for
    anything else; a directory that is neither a run nor a folder of runs is an error saying so."""
    from .checkpoint import META, run_lock_path, why_no_manifest
    from .errors import RunFormatError
    from .fsio import lock_holder
    from .registry import list_runs

    try:
        if not path.is_dir() or (path / META).exists() or (path / META).is_symlink():
            return None
    except OSError:
        return None  # what the run's own reading says of it
    if lock_holder(run_lock_path(path)):
        return None  # a run whose training has not written it yet
    entries = list_runs(path)
    if any(e.status != "link" for e in entries):
        return entries
    raise RunFormatError(f"{path} is not a run, nor a folder of runs: {why_no_manifest(path)}")


def _show_runs(folder: Path, entries: list, json_out: bool) -> None:
    """``info`` of a folder of runs: a table of them, then a line for each that needs a word
    (why it cannot be read, how to resume it, who trains it, where a name points)."""
    import datetime

    if json_out:
        rows = []
        for e in entries:
            row = {"run": e.run, "path": str(e.path), "status": e.status, "names": e.names, "detail": e.detail}
            row |= dict.fromkeys(("created_at", "model", "tickers", "best_epoch", "epochs_run", "best_val_loss"))
            row["evaluated"] = e.evaluated
            if (m := e.manifest) is not None:
                c = m.config
                row |= {
                    "created_at": m.model_dump(mode="json", include={"created_at"})["created_at"],  # as run.json has it
                    "model": {
                        "cell": c.model.cell,
                        "hidden_size": c.model.hidden_size,
                        "num_layers": c.model.num_layers,
                        "lookback": c.window.lookback,
                        "horizon": c.window.horizon,
                    },
                    "tickers": m.names,
                    "best_epoch": m.metrics.best_epoch,
                    "epochs_run": m.metrics.epochs_run,
                    "best_val_loss": m.metrics.best_val_loss,
                }
            rows.append(row)
        _emit_json({"folder": str(folder), "runs": rows})
        return
    table = []
    for e in entries:
        m = e.manifest
        if m is None:
            table.append([e.run, e.status, "", "", "", "", "", "", ", ".join(e.names)])
            continue
        c = m.config
        best = "" if m.metrics.best_val_loss is None else f"{m.metrics.best_val_loss:.5f}"
        status = e.status if m.status == "complete" else f"{e.status} (epoch {m.metrics.epochs_run})"
        table.append(
            [
                e.run,
                status,
                m.created_at.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
                f"{c.model.cell}, hidden {c.model.hidden_size}x{c.model.num_layers}",
                f"{c.window.lookback} / {c.window.horizon}",
                len(m.tickers),
                best,
                "yes" if e.evaluated else "",
                ", ".join(e.names),
            ]
        )
    columns = [
        "run",
        "status",
        "created (UTC)",
        "model",
        "lookback / horizon",
        "tickers",
        "best val",
        "evaluated",
        "names",
    ]
    _table(columns, table, title=f"runs in {folder}")
    for e in entries:
        if e.detail and e.status != "complete":
            print(printable(f"{e.run}: {e.detail}"))


def _evaluation_lines(path: Path, model: str, tickers: list[str]) -> list[str]:
    """The pooled figures of an evaluation's metrics.csv, a line per step: the median against
    naive, the intervals against the best volatility baseline and their coverage (or why the
    file cannot be read), and over which of the run's ``tickers`` when not all of them."""
    import pandas as pd

    from .metrics import POOLED
    from .tickers import some_names

    try:
        raw = path.read_bytes()
        if not raw:
            return ["(empty: run evaluate again to see its figures)"]
        if not raw.endswith(b"\n"):  # evaluate writes whole files: one cut or edited
            return ["(cut short: its last line is incomplete; run evaluate again to see its figures)"]
        m = pd.read_csv(io.BytesIO(raw))
        lacking = [
            c for c in ("ticker", "model", "step", "n", "skill", "coverage", "best_vol", "pinball_ratio") if c not in m
        ]
        if lacking:
            return [f"(made by an older evaluate, without {', '.join(lacking)}: run evaluate again to see its figures)"]
        rows = m[(m["ticker"] == POOLED) & (m["model"] == model)].sort_values("step")
        if rows.empty:
            return [f"(no pooled figures of the {model} model in it: run evaluate again to see them)"]
        lines = []
        present = set(m["ticker"])
        scored = [t for t in tickers if t in present]
        if len(scored) < len(tickers):
            lines.append(f"over {len(scored)} of the run's {len(tickers)} tickers ({some_names(scored)})")
        for r in rows.itertuples():
            vs = f" ({r.best_vol})" if isinstance(r.best_vol, str) else ""
            ratio = _cell(r.pinball_ratio, ".4f")
            if not ratio and vs:  # a baseline that held every actual: a price that never moved
                ratio = "none (its loss is 0)"
            lines.append(
                f"step {r.step}: MAE / naive {_cell(1 - r.skill, '.4f')}, pinball / best volatility baseline"
                f"{vs} {ratio}, 80 % coverage {_cell(r.coverage, '.1%')}, n {r.n}"
            )
        return lines
    except (OSError, ValueError, KeyError, AttributeError, TypeError, pd.errors.ParserError) as e:
        # TypeError: a word where a figure should be (a file edited by hand), read as text
        return [f"(unreadable: {type(e).__name__}: {e})"]


def _cell(v, fmt: str | None = None) -> str:
    """A table cell: empty for NaN, else ``format(v, fmt)``, or :func:`_figure` without one."""
    return "" if v != v else (_figure(v) if fmt is None else format(v, fmt))


def _say(line: str) -> None:
    """Print a line of ``info``, its control characters (an escape sequence in a run.json from
    elsewhere, which would clear the screen or retitle the terminal) written as escapes."""
    print(printable(line))


def _figure(v) -> str:
    """A figure as info and score's table show it: a float to four significant digits (0.2211,
    not 0.22107268869876862; 12346, not 1.235e+04), None as n/a, anything else as it is."""
    if v is None:
        return "n/a"
    if isinstance(v, float) and math.isfinite(v):
        return f"{v:.0f}" if abs(v) >= 1e4 else f"{v:.4g}"
    return str(v)


def _refuse_unusable(unusable: str | None) -> None:
    """Exit 1 with the reason, after info has shown what it could, for a run that cannot be used."""
    if unusable:
        log.error("the run cannot be used: %s", unusable)
        raise typer.Exit(EXIT_ERROR)


RunsDirOpt = Annotated[
    Path,
    _folder_option("--runs-dir", help="Folder of the promoted names and their run directories."),
]
NameOpt = Annotated[str, typer.Option("--name", help="The name to point: runs/NAME (letters, digits, _ . -).")]


def _coverage_bounds(value: str | None) -> tuple[float, float] | None:
    """--fail-if-coverage-outside LO,HI as two fractions (a usage error, exit 2, otherwise)."""
    if value is None:
        return None
    try:
        lo, hi = (float(x) for x in value.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected LO,HI such as 0.7,0.9, not {value!r}") from None
    if not 0 <= lo < hi <= 1:
        raise typer.BadParameter(f"expected 0 <= LO < HI <= 1, not {value!r}")
    return lo, hi


@app.command(cls=_Command)
def score(
    run: RunOpt,
    out: Annotated[
        Path | None,
        _folder_option(
            help="Folder the forecast CSVs were written to (default: the run's predict.out, forecasts/ unless set)."
        ),
    ] = None,
    source: RunSourceOpt = None,
    data_dir: RunDataDirOpt = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Score only forecasts made on or after DATE (YYYY-MM-DD).")
    ] = None,
    fail_if_coverage_outside: Annotated[
        str | None,
        typer.Option(
            "--fail-if-coverage-outside",
            metavar="LO,HI",
            callback=_coverage_bounds,
            help="Exit 1 when the pooled p10-p90 coverage of a step is outside [LO, HI], e.g. 0.7,0.9, "
            "by more than chance (a one-sided binomial test at --alpha).",
        ),
    ] = None,
    fail_if_no_skill: FailIfNoSkillOpt = False,
    alpha: Annotated[
        float,
        typer.Option(
            help="Significance level of both alerts' tests (coverage and skill).", min=0, metavar="<float>", max=1
        ),
    ] = 0.05,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    log_file: LogFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Score every forecast written for a run against the closes realised since.

    Reads OUT/<run>/<as_of>.csv, writes OUT/<run>/score.csv (per ticker and step, and pooled
    ALL: n, pending, MAE, naive MAE, skill, DM p, coverage, width, pinball) and prints it. Exit 3
    if some forecast files or tickers were skipped (named on stderr), 1 when an alert fires. A
    run whose directory was deleted is scored from its forecasts when --source is given.
    """
    setup_logging(quiet, log_file, json_out)
    with handled(debug, "score", json_out):
        from .scoring import score as do_score
        from .tickers import log_some

        _refuse_empty(run=run, out=out, data_dir=data_dir)
        rep = do_score(run, out=out, source=_val(source), data_dir=data_dir, since=since)
        alerts = [rep.coverage_alert(*fail_if_coverage_outside, alpha)] if fail_if_coverage_outside else []
        alerts += [rep.skill_alert(alpha)] if fail_if_no_skill else []
        alerts = [a for a in alerts if a]
        _show_score(rep, alerts, quiet, json_out)
        skipped = [f"{rep.folder / name} skipped: {reason}" for name, reason in rep.skipped.items()]
        log_some(logging.ERROR, skipped, "skipped forecast files")
        log_some(logging.ERROR, [f"{sym} failed: {reason}" for sym, reason in rep.failed.items()], "failed tickers")
        if alerts:
            log.error("%s", "; ".join(alerts))
            raise typer.Exit(1)
        raise typer.Exit(rep.exit_code)


def _show_score(rep, alerts: list[str], quiet: bool, json_out: bool) -> None:
    # its warnings are logged by score itself
    # the result, for --log-file (stdout has the table): each score leaves a line in the log
    log.info(
        "scored %s of run %s: %s",
        _count(len(rep.read), "forecast file"),
        rep.run,
        ", ".join(f"{k} {v}" for k, v in rep.files.items()) or "nothing written",
        extra={RESULT: True},
    )
    if json_out:
        _emit_json(
            {
                "run": rep.run,
                "read": rep.read,
                "skipped": rep.skipped,
                "failed": rep.failed,
                "warnings": rep.warnings,
                "alerts": alerts,
                "files": {k: str(v) for k, v in rep.files.items()},
                "scores": json.loads(rep.scores.to_json(orient="records")),
            }
        )
        return
    if quiet:
        return

    _table(
        ["ticker", "step", "n", "pending", "MAE", "MAE naive", "skill", "DM p", "coverage", "width", "pinball"],
        [
            [r.ticker, r.step, r.n, r.pending, _cell(r.mae), _cell(r.mae_naive), _cell(r.skill, "+.2%")]
            + [_cell(r.dm_pvalue, ".3f"), _cell(r.coverage, ".1%"), _cell(r.width), _cell(r.pinball)]
            for r in rep.scores.itertuples(index=False)
        ],
        title=f"live scores of run {rep.run} ({_count(len(rep.read), 'forecast file')}); skill = 1 - MAE/MAE naive",
    )
    for k, v in rep.files.items():
        print(f"{k}: {shown_path(v)}")


@app.command(cls=_Command)
def promote(
    run: Annotated[
        Path,
        typer.Argument(
            help="Run directory to promote (a complete run).",
            file_okay=False,
            readable=False,  # one that cannot be read is the command's error (exit 1), not a usage error
            metavar="DIR",
            path_type=str,
            callback=_keep_empty,
        ),
    ],
    name: NameOpt,
    runs_dir: RunsDirOpt = Path("runs"),
    lock_timeout: LockOpt = 0.0,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    log_file: LogFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Point the name runs/NAME at a run directory, atomically.

    runs/NAME is a symbolic link switched by one rename: predict, evaluate, score and info
    given runs/NAME read the old run or the new one, whole. Exit 75 if a promote or retrain of
    the name holds its lock.
    """
    setup_logging(quiet, log_file, json_out)
    with handled(debug, "promote", json_out):
        from .registry import promote as do_promote

        _refuse_empty(DIR=run, runs_dir=runs_dir)
        _refuse_tune_folder(name, runs_dir)
        res = do_promote(run, name, runs_dir=runs_dir, lock_timeout=lock_timeout)
        # the result, for --log-file (stdout has it below): a promotion leaves a line in the log
        log.info(
            "promoted %s -> %s%s",
            res.pointer,
            res.target,
            f" (was {res.previous})" if res.previous else "",
            extra={RESULT: True},
        )
        if json_out:
            _emit_json({"name": res.name, "pointer": res.pointer, "target": res.target, "previous": res.previous})
        elif not quiet:
            was = f"  (was {shown_path(res.previous)})" if res.previous else ""
            print(f"{shown_path(res.pointer)} -> {shown_path(res.target)}{was}")


def _refuse_best_over_studies(best: Path) -> None:
    """A ConfigError for a ``tune --train-best`` run directory that is, holds, or lies inside
    the folder of the studies (runs/tune): the best run replaces its folder whole. Where that
    folder was not made yet (``--run-dir runs`` in a new project, or ``runs/tune/<study>``,
    which the search fills with its results) the search ran first, and the best run was
    refused after it, as a folder that is no run."""
    from .config import TUNE_ROOT

    studies = _resolved(TUNE_ROOT)
    if _resolved(best) == studies or _resolved(best) in studies.parents:
        raise ConfigError(
            f"cannot train the best run into {best}: it would replace {TUNE_ROOT}, where tune keeps its studies "
            "and results; choose another --run-dir"
        )
    # runs/tune/<study> is that study's results (trials.csv, best.toml), made by the search
    if studies in _resolved(best).parents:
        raise ConfigError(
            f"cannot train the best run into {best}: it is inside {TUNE_ROOT}, where tune keeps its studies and "
            "results (a study's in a folder of its name); choose another --run-dir"
        )


def _refuse_tune_folder(name: str, runs_dir: Path, said: str = "--name") -> None:
    """A ConfigError for the name ``tune`` in the runs folder that ``tune`` keeps its studies in
    (runs/tune/<study>.db and runs/tune/<study>/): promoted, runs/tune was a link to the run,
    and the next ``forecaster tune`` wrote its study into that run's directory."""
    from .config import TUNE_ROOT

    if name == TUNE_ROOT.name and _resolved(Path(runs_dir)) == _resolved(TUNE_ROOT.parent):
        raise ConfigError(
            f"{said} {name}: {Path(runs_dir) / name} is the folder where `forecaster tune` keeps its studies "
            f"({TUNE_ROOT}/<study>.db), no promoted name; use another name"
        )


def retrain(
    name: Annotated[
        str, typer.Argument(help="The promoted name whose champion is challenged (runs/NAME).", metavar="NAME")
    ],
    tickers: Annotated[
        list[str] | None,
        typer.Option(
            "--tickers",
            "-t",
            metavar="<tickers>",
            help="Tickers, comma-separated; may be repeated (default: the champion's).",
        ),
    ] = None,
    runs_dir: RunsDirOpt = Path("runs"),
    keep: Annotated[
        int,
        typer.Option(
            min=1,
            metavar="<int>",
            help="Run directories of NAME to keep, unfinished ones (an interrupted retrain's) deleted first "
            "(one a promoted name points at is never deleted).",
        ),
    ] = 5,
    alpha: Annotated[
        float,
        typer.Option(
            help="Significance of the test that the challenger's MAE is worse.", min=0, metavar="<float>", max=1
        ),
    ] = 0.05,
    lock_timeout: LockOpt = 0.0,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    log_file: LogFileOpt = None,
    debug: DebugOpt = False,
    **train_flags,
) -> None:
    """Train a challenger with the champion's config; promote it only if it is not worse.

    The challenger (runs/NAME-<UTC time>) is trained on the data as the source holds it now,
    with the train flags given here on top of the champion's config. Both are backtested on the
    challenger's test split; it replaces the champion when its pinball loss is not higher and
    its MAE not significantly worse (one-sided DM test at --alpha). Exit 0 either way, 1 on
    error (the pointer is untouched), 75 if the name is locked, 130 if interrupted (Ctrl-C,
    SIGTERM: one line says where the name points; run the same retrain again).
    """
    setup_logging(quiet, log_file, json_out)
    with handled(debug, "retrain", json_out):
        from .retraining import retrain as do_retrain
        from .training import Interrupted

        _refuse_empty(runs_dir=runs_dir)
        _refuse_tune_folder(name, runs_dir, "NAME")
        flags = overrides(train_flags, _tickers(tickers, None))
        try:
            with _progress(_bar_shown() and not quiet and not json_out, 0) as (on_epoch, on_batch):
                rep = do_retrain(
                    name,
                    overrides=flags,
                    runs_dir=runs_dir,
                    keep=keep,
                    alpha=alpha,
                    lock_timeout=lock_timeout,
                    on_epoch=on_epoch,
                    on_batch=on_batch,
                )
        except Interrupted as e:  # --json still says where the name points, then exit 130
            if json_out:
                _emit_json(e.details | {"interrupted": True, "message": str(e)})
            raise
        if json_out:
            _emit_json(rep.as_dict() | {"interrupted": False})
        else:  # the verdict is the result, printed with --quiet too (a cron job mails it)
            print(rep.comparison.reason)
            if not quiet:
                print(f"{shown_path(rep.pointer)} -> {shown_path(rep.challenger if rep.promoted else rep.champion)}")


def _train_flags(without: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """train's options that set config keys, but --run-dir (and ``without``): tune and retrain
    take exactly these."""
    params = inspect.signature(train, eval_str=True).parameters
    return [p for n, p in params.items() if n in OVERRIDES and n != "run_dir" and n not in without]


def _with_train_flags(command, recorded: str | None = None, without: tuple[str, ...] = ()):
    """``command`` registered with its own options followed by every train flag (its
    ``**train_flags``) but ``without``, so a flag added to train is one of tune and retrain too.
    With ``recorded``, ``--source`` and ``--data-dir`` say that their default is that run's."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.kind != p.VAR_KEYWORD]
    flags = [p.replace(kind=p.KEYWORD_ONLY) for p in _train_flags(without)]
    if recorded is not None:
        kinds = dict(zip(("source", "data_dir"), _recorded_data_options(recorded), strict=True))
        flags = [p.replace(annotation=kinds[p.name]) if p.name in kinds else p for p in flags]
    command.__signature__ = inspect.Signature(own + flags)
    return app.command(cls=_Command)(command)


_with_train_flags(tune)
# a challenger saves no checkpoints (one cut short is trained again, not resumed)
_with_train_flags(retrain, recorded="the champion's", without=("checkpoint_every",))


def _closed_streams_to_devnull() -> None:
    """A job started with stdin, stdout or stderr closed (``>&-``) has None there: what it would
    have printed goes to the null device, and its files and exit code are what they would be.
    The null device takes the closed number itself: a file opened later (its log file, a pool's
    pipe) would take it otherwise, and get what a library or a worker writes to its stderr. It is
    inherited as a standard stream is: a worker started anew (train's garch fits) would otherwise
    start with the number closed again, for its own pipe to take."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:  # closed: open takes the lowest free number, this one (those below are open)
            os.set_inheritable(os.open(os.devnull, os.O_RDWR), True)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, "w", encoding="utf-8", errors="backslashreplace", closefd=False))


def _output_lost(exc: OSError) -> None:
    line = f"cannot write to stdout: {exc.strerror or exc}; what the command printed there is incomplete"
    if log.handlers:  # a command's: on stderr and in its --log-file
        log.error(line)
    else:  # --help, --version, a usage error
        from .entry import _say

        _say(sys.stderr, f"ERROR: {line}\n")


def main() -> None:
    """Console-script entry point."""
    from .entry import stopped_while_starting

    try:  # the entry point's stop handlers are set: a stop here is one while starting, not a traceback
        _closed_streams_to_devnull()
        _sigterm_as_ctrl_c()
        out = sys.stdout = _ReaderMayGo(sys.stdout)
        sys.stderr = _ReaderMayGo(sys.stderr)  # a usage error's lines (`2>&1 | head -1`) as well as the log's
    except KeyboardInterrupt:
        stopped_while_starting()
    try:
        app()
    except KeyboardInterrupt:
        if not _Printed.started:  # while typer built the command line: no command had begun
            stopped_while_starting()
        code = EXIT_INTERRUPTED  # after the command's own handling: its lines are out already
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if code == EXIT_INTERRUPTED and not _Printed.started:  # typer's own exit 130 for a
            stopped_while_starting()  # Ctrl-C while it read the arguments, without a word
    else:
        code = 0
    # Skip the interpreter's teardown of torch and friends (about a second on a small machine):
    # everything this process writes is already flushed and renamed into place by now.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if out.failed:  # what the user asked for (a --json document, a table, --help) did not all reach stdout
        _output_lost(out.failed)
        code = code or EXIT_ERROR
    logging.shutdown()
    os._exit(code)
