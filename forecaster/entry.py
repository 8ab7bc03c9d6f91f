"""The ``forecaster`` command's entry point: it can be stopped cleanly from its first line.

Importing the command line (typer, rich and the commands) takes about a tenth of a second. A
SIGTERM in that time (a service stopped just as cron started it, a wrapper's ``timeout``)
would otherwise end the process with 143 and nothing said, and a Ctrl-C would print a
traceback. Both stop it here with one line and exit 130, as they do later on: nothing has been
read or written yet. Only the standard library is imported before the handler is set. The
fifth of a second after the import, while typer builds the command line and reads the
arguments, ends the same way (``forecaster.cli.main``). Before this module runs, while the
interpreter starts (a few hundredths of a second), a signal meets the system's defaults.
"""

from __future__ import annotations

import _thread
import os
import signal
import sys

EXIT_INTERRUPTED = 130

_stopping = [False]  # a command of this process was stopped and is saving, or saying so


def stop_begun(begun: bool = True) -> None:
    """Say that this command was stopped (the first SIGINT/SIGTERM, or a distributed job that
    lost a process) and is saving its work or saying what it kept: from then on the command
    line's handlers ignore those signals (torchrun sends SIGTERM to every process once one has
    stopped), so that one arriving as the line is printed cannot end the process without it.
    ``False`` at the start of each command."""
    _stopping[0] = begun


def stopping() -> bool:
    """Whether :func:`stop_begun` was said (and not taken back) in this process."""
    return _stopping[0]


_in_hook = [0]  # the main thread is in the unraisable hook below (nested calls counted)
_main_thread = [None]  # the thread that took the stop signals: the one their handler runs in


def on_stop_signal(signum, frame):
    """SIGINT and SIGTERM in the command line: Ctrl-C, unless the command is already stopping."""
    if _stopping[0]:
        return
    if _in_hook[0]:  # raised in the hook, Python would drop it again ("Exception ignored in
        _deliver_again()  # sys.unraisablehook") and nothing would deliver it once more: put off
        return
    raise KeyboardInterrupt


def stopped_while_starting() -> None:
    """A command stopped before it began its work (the import of the command line, typer
    building it and reading the arguments): one line, with ``--json`` the error object on
    stdout too, and exit 130; nothing has been read or written yet."""
    line = "forecaster interrupted while starting; nothing was read or written"
    if other_training_rank(sys.argv[1] if len(sys.argv) > 1 else ""):
        os._exit(EXIT_INTERRUPTED)  # a distributed training's other processes: rank 0 says it, once
    _say(sys.stderr, f"ERROR: {line}\n")
    if "--json" in sys.argv[1:]:
        import json

        _say(sys.stdout, json.dumps({"error": line, "exit_code": EXIT_INTERRUPTED}, indent=2) + "\n")
    os._exit(EXIT_INTERRUPTED)


def other_training_rank(command: str) -> bool:
    """Whether ``command`` runs as a process of a distributed (torchrun) training job other than
    rank 0, which alone says what the job did (another command run where a job runner sets RANK
    for every process is no such rank)."""
    return (
        command == "train"
        and os.environ.get("WORLD_SIZE", "1") not in ("", "1")
        and os.environ.get("RANK", "0") not in ("", "0")
    )


def _say(stream, text: str) -> None:
    try:
        stream.write(text)
        stream.flush()
    except (AttributeError, OSError, ValueError):  # the stream closed (``>&-``)
        pass


def take_stop_signals() -> None:
    """SIGTERM taken as Ctrl-C, and SIGINT listened to (a shell script's `forecaster ... &`
    starts with it ignored), so that an interruption is never lost while the command starts; and
    one whose KeyboardInterrupt Python drops (raised inside a finalizer, a weak reference's
    callback as the garbage collector runs it: "Exception ignored in ...") is delivered again."""
    signal.signal(signal.SIGTERM, on_stop_signal)
    signal.signal(signal.SIGINT, on_stop_signal)
    _main_thread[0] = _thread.get_ident()
    sys.unraisablehook = _stop_delivered_again(sys.unraisablehook)


def _stop_delivered_again(then):
    def hook(info) -> None:
        main = _thread.get_ident() == _main_thread[0]
        if main:
            _in_hook[0] += 1
        try:
            if isinstance(info.exc_value, KeyboardInterrupt) and signal.getsignal(signal.SIGINT) is on_stop_signal:
                _deliver_again()
                return
            then(info)
        finally:
            if main:
                _in_hook[0] -= 1

    return hook


def _deliver_again() -> None:
    """Raise the stop again in the main thread, from another thread a moment later: made here,
    the interrupt would be raised in the hook as soon as the call returned, and dropped again.
    Should it still come while the main thread is in the hook (held up there on a busy
    machine), :func:`on_stop_signal` puts it off once more rather than raise it there."""
    import threading

    threading.Timer(0.01, _thread.interrupt_main).start()


def main() -> None:
    """Console-script entry point: SIGTERM taken as Ctrl-C, then the command line."""
    try:  # a stop from the moment the handlers are set, not only in the import
        take_stop_signals()
        for stream in (sys.stdout, sys.stderr):  # a path or ticker its encoding lacks (PYTHONIOENCODING=ascii)
            try:  # is written escaped, not an error once the files are written
                stream.reconfigure(errors="backslashreplace")
            except (AttributeError, ValueError, OSError):  # closed (`>&-`), or not a text stream
                pass
        from .cli import main as run
    except KeyboardInterrupt:
        stopped_while_starting()
    run()
