"""Help text and documentation: every command and every option explains itself, the README
covers every command and exit code, and both entry points (`forecaster`, `python -m forecaster`)
work from a shell."""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.core
import typer.main
from support import FORECASTER, ROOT, cli_env

import forecaster
from forecaster import errors
from forecaster.cli import app

COMMANDS = ["download", "train", "evaluate", "predict", "info", "score", "promote", "retrain", "tune"]
# The exit codes of SPEC §2, each with the phrases its line in the README's table must hold
# (the first one opens the line).
EXIT_CODES = {
    0: ("everything asked for was done",),
    1: ("error", "bad config", "unreadable run", "bad data", "nothing partial was written"),
    2: ("usage error",),
    3: ("partial", "some tickers failed", "named on stderr", "the rest were written"),
    75: ("temporary failure", "network down", "no usable local data", "another run holds the lock", "retry later"),
}
# Ctrl-C or SIGTERM during `train` (README: "Interrupting and resuming training"), the shell's
# 128 + SIGINT; not a code of the table.
EXIT_INTERRUPTED = 130


def _group():
    return typer.main.get_command(app)


def _params():
    for name, cmd in _group().commands.items():
        for p in cmd.params:
            yield name, p


def test_the_app_has_exactly_the_documented_commands():
    assert sorted(_group().commands) == sorted(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help(name):
    cmd = _group().commands[name]
    assert cmd.help and len(cmd.help.strip()) > 20
    assert not cmd.hidden


def test_every_option_and_argument_has_help():
    missing = [f"{cmd} {p.name}" for cmd, p in _params() if not (getattr(p, "help", None) or "").strip()]
    assert missing == []


def test_every_argument_says_more_than_its_name():
    """An argument's help says what it takes and what is done with it, not just "Run directory."."""
    terse = [
        f"{cmd} {p.name}: {p.help!r}"
        for cmd, p in _params()
        if isinstance(p, typer.core.TyperArgument) and len((p.help or "").split()) < 4
    ]
    assert terse == []


def test_info_argument_help_says_what_it_takes_and_shows(cli):
    res = cli("info", "--help")
    assert res.exit_code == 0, res.stderr
    text = " ".join(res.stdout.split())
    assert "info [OPTIONS] {DIR}" in text  # braces: a required argument
    for phrase in ("written by train", "promoted name runs/NAME", "date ranges", "metrics", "versions"):
        assert phrase in text, phrase


def test_quiet_does_what_its_help_says(cli, trained_run, tmp_path):
    """--quiet keeps a successful predict silent on stdout (what a cron job wants) and the --json
    object whole; its help says so rather than promising "results" it does not print."""
    res = cli("predict", "--run", trained_run, "--out", tmp_path / "fc", "--offline", "--quiet")
    assert res.exit_code == 0, res.stderr
    assert res.stdout == ""
    res = cli("predict", "--run", trained_run, "--out", tmp_path / "fc", "--offline", "--quiet", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["run"] == trained_run.name
    text = " ".join(cli("predict", "--help").stdout.split())
    assert "Print only errors and warnings (and --json's object, retrain's verdict): no tables or summaries." in text


@pytest.mark.parametrize(("name", "usage"), [("info", "{DIR}"), ("promote", "{DIR}"), ("download", "[TICKER]...")])
def test_usage_line_names_the_arguments_as_the_help_does(cli, name, usage):
    """DIR and TICKER, as in the other commands' usage lines (NAME, [TICKER]...), not the
    code's own names ({run}, {tickers})."""
    res = cli(name, "--help")
    [line] = [ln for ln in res.stdout.splitlines() if "Usage:" in ln]
    assert line.rstrip().endswith(usage), line


def test_the_common_options_are_where_the_spec_puts_them():
    opts = {name: {o for p in cmd.params for o in getattr(p, "opts", [])} for name, cmd in _group().commands.items()}
    for name in ("download", "train", "evaluate", "predict"):
        assert {"--quiet", "--json", "--log-file"} <= opts[name], name
    for name in ("train", "evaluate", "predict"):
        assert {"--source", "--data-dir"} <= opts[name], name
    assert {"--json", "--log-file"} <= opts["info"]
    assert {"--config", "--data-dir"} <= opts["download"]
    assert {
        "--config",
        "--tickers",
        "--model",
        "--lookback",
        "--horizon",
        "--hidden-size",
        "--num-layers",
        "--dropout",
        "--epochs",
        "--batch-size",
        "--lr",
        "--seed",
        "--val-days",
        "--test-days",
        "--device",
        "--run-dir",
    } <= opts["train"]
    assert {"--run", "--as-of", "--out", "--offline", "--max-staleness"} <= opts["predict"]
    assert {"--run"} <= opts["evaluate"]
    for name in ("score", "promote", "retrain"):
        assert {"--quiet", "--json", "--log-file"} <= opts[name], name
    assert {"--run", "--out", "--source", "--data-dir", "--since"} <= opts["score"]
    assert {"--fail-if-coverage-outside", "--fail-if-no-skill"} <= opts["score"]
    assert {"--name", "--runs-dir", "--lock-timeout"} <= opts["promote"]
    # retrain takes every train flag that sets a config key (not --run-dir, not --resume, and not
    # --checkpoint-every: a challenger saves none), tune every one but --run-dir and --resume
    train_flags = {o for o in opts["train"] if o.startswith("--")} - {"--run-dir", "--resume", "--config"}
    assert train_flags - {"--checkpoint-every"} <= opts["retrain"] and "--checkpoint-every" not in opts["retrain"]
    assert train_flags <= opts["tune"]
    assert {"--keep", "--runs-dir", "--lock-timeout"} <= opts["retrain"]


def test_readme_options_table_names_every_command_with_lock_timeout():
    """The shared options table says which commands take --lock-timeout: all of them, no other."""
    [row] = [ln for ln in _readme().splitlines() if ln.startswith("| `--lock-timeout")]
    meaning = row.split("|")[2]
    listed = set(re.findall(r"\b(" + "|".join(COMMANDS) + r")\b", meaning.split(":")[0]))
    having = {name for name, p in _params() if "--lock-timeout" in getattr(p, "opts", [])}
    assert listed == having, (meaning, sorted(having))


def test_download_data_dir_help_speaks_of_the_store_only():
    """download has no --source: its --data-dir is the store root, never a folder of CSV files."""
    [opt] = [p for p in _group().commands["download"].params if "--data-dir" in getattr(p, "opts", [])]
    assert "store/<TICKER>.parquet" in opt.help and "csv" not in opt.help.lower()


@pytest.mark.parametrize(
    ("name", "default"),
    [("evaluate", "the run's"), ("predict", "the run's"), ("score", "the run's"), ("retrain", "the champion's")],
)
def test_source_and_data_dir_help_of_a_command_reading_a_run_says_whose_they_are(name, default):
    """A command that reads a run takes the source and data folder the run recorded (retrain:
    the champion's), so its help says so rather than train's built-in ``data/``."""
    opts = {o: p for p in _group().commands[name].params for o in getattr(p, "opts", [])}
    for flag in ("--source", "--data-dir"):
        assert f"(default: {default})" in opts[flag].help and "default data/" not in opts[flag].help, flag
    [train_dir] = [p for p in _group().commands["train"].params if "--data-dir" in getattr(p, "opts", [])]
    assert "(default data/)" in train_dir.help  # train's own default is the built-in folder


@pytest.mark.parametrize("name", COMMANDS)
def test_command_help_runs_and_lists_its_options(cli, name):
    res = cli(name, "--help")
    assert res.exit_code == 0, res.stderr
    cmd = _group().commands[name]
    for p in cmd.params:
        for opt in getattr(p, "opts", []):
            if opt.startswith("--"):
                assert opt in res.stdout, (name, opt)
    # an option's value is named as the others are (<int>), not by a Python type (<int range>, <list[str]>)
    options = res.stdout[res.stdout.index("Options:") :]
    assert "range>" not in options and "list[" not in options, options


@pytest.mark.parametrize("name", [None, *COMMANDS])
def test_help_fits_a_narrow_terminal_with_every_option_name_whole(cli, monkeypatch, name):
    """On a phone's 40 columns the parser still wrapped its help at 50, and the terminal broke
    every line again, in mid-word. The help fits now, an option's help under its name where
    the name is long; only a pair of names longer than the terminal is wider."""
    args = [name, "--help"] if name else ["--help"]

    def names(text: str) -> list[str]:  # the first column of the options: their names
        return re.findall(r"^  (-\S.*?)(?:  |$)", text[text.index("Options:") :], re.MULTILINE)

    wide = names(cli(*args).stdout)
    monkeypatch.setenv("COLUMNS", "40")
    res = cli(*args)
    assert res.exit_code == 0, res.stderr
    assert names(res.stdout) == wide, res.stdout
    too_wide = [line for line in res.stdout.splitlines() if len(line) > 40]
    assert all(line.strip() in wide for line in too_wide), too_wide


def test_readme_says_how_many_digits_a_forecast_csv_keeps():
    """Significant digits, not decimals: a price of 205.13 keeps seven decimals, not ten."""
    from forecaster.outputs import FLOAT_FORMAT

    digits = int(re.fullmatch(r"%\.(\d+)g", FLOAT_FORMAT).group(1))
    assert f"the CSV keeps {({10: 'ten'})[digits]} significant digits" in " ".join(_readme().split())


def _readme() -> str:
    readme = ROOT / "README.md"
    assert readme.is_file(), "README.md is missing"
    return readme.read_text(encoding="utf-8")


def _section(text: str, title: str) -> str:
    """The body of the README's ``## title`` section."""
    head = f"\n## {title}\n"
    assert head in text, f"README lacks the section {title!r}"
    return text.split(head, 1)[1].split("\n## ", 1)[0]


def test_readme_mentions_every_command():
    text = _readme()
    for name in COMMANDS:
        assert re.search(rf"forecaster\s+{name}\b", text), f"README lacks `forecaster {name}`"


def test_readme_exit_code_table_is_exactly_the_documented_codes():
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*(.+?)\s*\|\s*$", _section(_readme(), "Exit codes"), re.M)
    table = {int(code): meaning for code, meaning in rows}
    assert len(table) == len(rows), f"a code appears twice: {rows}"
    assert sorted(table) == sorted(EXIT_CODES)
    for code, phrases in EXIT_CODES.items():
        assert table[code].startswith(phrases[0]), (code, table[code])
        missing = [p for p in phrases if p not in table[code]]
        assert missing == [], (code, table[code])


# What the README's exit-code table says exits 2 (the parser refuses the command line) and what
# exits 1 (a value the parser accepts, refused by the command), each with a command line showing it
_USAGE_OR_REFUSED = [
    (2, "an unknown option", ["predict", "--bogus"]),
    (2, "a missing argument", ["promote", "{run}"]),
    (2, "`--lock-timeout soon`", ["predict", "--lock-timeout", "soon"]),
    (2, "`--max-staleness -1`", ["predict", "--max-staleness", "-1"]),
    (2, "`--source ftp`", ["predict", "--source", "ftp"]),
    (2, "a `--config` file that does not exist", ["train", "--config", "{out}/none.toml"]),
    (2, "`--fail-if-coverage-outside` not `LO,HI`", ["score", "--fail-if-coverage-outside", "0.9"]),
    (1, "`--as-of` or `--since` not a date", ["predict", "--as-of", "someday"]),
    (1, "`--as-of` or `--since` not a date", ["score", "--since", "someday"]),
    (1, "or in the future", ["predict", "--as-of", "2999-01-04"]),
    (1, "a bad ticker symbol", ["predict", "../x"]),
    (1, "an empty folder name", ["predict", "--data-dir", ""]),
    (1, "an empty folder name", ["download", "AAA", "--data-dir", ""]),
    (1, "(`--lookback 0`)", ["train", "--lookback", "0", "--run-dir", "{out}/r"]),
]


@pytest.mark.parametrize(("code", "phrase", "args"), _USAGE_OR_REFUSED)
def test_readme_says_which_bad_values_exit_2_and_which_exit_1(
    cli, trained_run, sample_dir, tmp_path, code, phrase, args
):
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*(.+?)\s*\|\s*$", _section(_readme(), "Exit codes"), re.M)
    assert phrase in dict(rows)[str(code)], (code, phrase)
    out = tmp_path / "out"
    args = [a.format(run=trained_run, out=out) for a in args]
    if args[0] == "train":
        args += ["--source", "csv", "--data-dir", str(sample_dir), "-t", "STOCKA"]
    elif args[0] in ("predict", "score"):
        args += ["--run", str(trained_run), "--out", str(out)]
    res = cli(*args)
    assert res.exit_code == code, (res.exit_code, res.stdout + res.stderr)
    assert not out.exists()  # nothing written either way


def test_readme_documents_the_interrupted_exit_code():
    section = _section(_readme(), "Interrupting and resuming training")
    assert re.search(rf"\bexits\s+{EXIT_INTERRUPTED}\b", section), section


def test_the_error_module_names_exactly_the_documented_codes():
    named = {k: v for k, v in vars(errors).items() if k.startswith("EXIT_")}
    assert sorted(set(named.values())) == sorted([*EXIT_CODES, EXIT_INTERRUPTED]), named
    assert (errors.EXIT_OK, errors.EXIT_ERROR, errors.EXIT_USAGE) == (0, 1, 2)
    assert (errors.EXIT_PARTIAL, errors.EXIT_TEMPFAIL, errors.EXIT_INTERRUPTED) == (3, 75, EXIT_INTERRUPTED)


def _package_modules() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(forecaster.__path__, "forecaster.")]
    return [n for n in names if n != "forecaster.__main__"]  # importing it would run the CLI


def _subclasses(cls: type) -> list[type]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


def test_every_error_exits_with_a_documented_code():
    for name in _package_modules():
        importlib.import_module(name)
    codes = {f"{c.__module__}.{c.__qualname__}": c.exit_code for c in _subclasses(errors.ForecasterError)}
    assert len(codes) >= 10, codes  # the whole package was imported
    odd = {k: v for k, v in codes.items() if v not in EXIT_CODES and v != EXIT_INTERRUPTED}
    assert odd == {}
    # only an interrupted training exits 130
    assert [k for k, v in codes.items() if v == EXIT_INTERRUPTED] == ["forecaster.training.Interrupted"]


def _exit_calls():
    """(file:line, argument) of every ``typer.Exit(...)`` / ``SystemExit(...)`` / ``sys.exit(...)``
    in the package, the argument as an expression node (None when absent)."""
    for path in sorted(Path(next(iter(forecaster.__path__))).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            if name in ("Exit", "SystemExit") or (owner, name) == ("sys", "exit"):
                yield f"{path.name}:{node.lineno}", (node.args[0] if node.args else None)


def test_every_exit_in_the_code_uses_a_documented_code():
    calls = list(_exit_calls())
    assert len(calls) >= 5, calls  # the scan sees the CLI's exits
    for where, arg in calls:
        if arg is None:
            continue  # Exit() is 0
        if isinstance(arg, ast.Constant):
            code = arg.value
        elif isinstance(arg, ast.Name) and arg.id.startswith("EXIT_"):
            code = getattr(errors, arg.id)
        elif isinstance(arg, ast.Attribute) and arg.attr == "exit_code":
            continue  # an error's own code: test_every_error_exits_with_a_documented_code
        elif isinstance(arg, ast.Call) and getattr(arg.func, "id", "") == "main":
            continue  # `python -m forecaster.synthetic`: a script's own main()
        else:
            pytest.fail(f"{where}: exit code {ast.unparse(arg)} is neither a number nor an EXIT_ constant")
        assert code in EXIT_CODES or code == EXIT_INTERRUPTED, (where, code)


def _help_texts():
    for name, cmd in _group().commands.items():
        yield name, cmd.help or ""
        for p in cmd.params:
            yield f"{name} {p.name}", getattr(p, "help", None) or ""


def test_help_names_only_documented_exit_codes():
    named = {}
    for where, text in _help_texts():
        for sentence in re.split(r"\.\s", " ".join(text.split())):
            if re.search(r"\bexit(s|ing)?\b", sentence, re.I):
                named[where] = {int(n) for n in re.findall(r"\b\d+\b", sentence)}
    assert named, "no help text names an exit code"
    documented = {*EXIT_CODES, EXIT_INTERRUPTED}
    odd = {where: codes - documented for where, codes in named.items() if codes - documented}
    assert odd == {}


def _lists_all_commands(text):
    return [name for name in COMMANDS if not re.search(rf"\b{name}\b", text)]


def test_console_script_and_module_help():
    assert FORECASTER.is_file(), f"console script not installed next to {sys.executable}"
    for argv in ([str(FORECASTER), "--help"], [sys.executable, "-m", "forecaster", "--help"]):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=cli_env(), cwd=ROOT)
        assert proc.returncode == 0, (argv, proc.stderr)
        assert _lists_all_commands(proc.stdout) == [], (argv, proc.stdout)
        assert "Usage" in proc.stdout


def test_version_is_the_installed_package_version(cli):
    from importlib.metadata import version

    res = cli("--version")
    assert res.exit_code == 0
    assert res.stdout.strip() == f"forecaster {version('forecaster')}" == f"forecaster {forecaster.__version__}"


@pytest.mark.parametrize("command", ["retrain", "train", "tune"])
def test_the_help_of_the_commands_that_train_gives_exit_130_on_interruption(cli, command):
    res = cli(command, "--help")
    assert res.exit_code == 0
    about = res.stdout.split("Options")[0]  # the command's description, before its options
    assert "130" in about and "SIGTERM" in about, about


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["predict", "--help"]])
def test_help_and_version_to_a_reader_gone_or_a_full_disk(argv):
    """`forecaster --help | head -1` exited 1 (the parser's end on a closed pipe), where the
    README says a reader gone costs the output, not the exit code; `forecaster --help >
    /dev/full` printed a traceback and "Exception ignored", exit 120."""
    env = {k: v for k, v in cli_env().items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen([FORECASTER, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    proc.stdout.close()  # the reader is gone before the command prints
    assert (proc.wait(timeout=120), proc.stderr.read()) == (0, "")
    with open("/dev/full", "w") as full:
        proc = subprocess.run([FORECASTER, *argv], stdout=full, stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    assert (proc.returncode, proc.stderr) == (
        1,
        "ERROR: cannot write to stdout: No space left on device; what the command printed there is incomplete\n",
    )


def test_a_usage_error_whose_lines_cannot_be_written_still_exits_2():
    """`forecaster train --bogus 2>&1 | head -1` exited 120, not the usage error's 2: the
    parser's lines met the closed pipe, and so did the interpreter's own at exit; the same
    with stderr on a full disk (`2> /dev/full`)."""
    env = {k: v for k, v in cli_env().items() if k != "PYTHONUNBUFFERED"}
    argv = [FORECASTER, "train", "--bogus"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    proc.stderr.close()  # the reader is gone before the command prints
    assert (proc.wait(timeout=120), proc.stdout.read()) == (2, "")
    with open("/dev/full", "w") as full:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=full, text=True, env=env, timeout=120)
    assert (proc.returncode, proc.stdout) == (2, "")
