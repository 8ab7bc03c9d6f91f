"""The ``forecaster`` command's entry point: it can be stopped cleanly from its first instant.

Importing the command line (typer, rich and the commands) takes about a tenth of a second. A
SIGTERM in that time (a service stopped just as cron started it, a wrapper's ``timeout``)
would otherwise end the process with 143 and nothing said, and a Ctrl-C would print a
traceback. Both stop it here with one line and exit 130, as they do later on: nothing has been
read or written yet. Only the standard library is imported before the handler is set.
"""

from __future__ import annotations

import os
import signal
import sys

EXIT_INTERRUPTED = 130


def _stop(signum, frame):
    raise KeyboardInterrupt


def main() -> None:
    """Console-script entry point: SIGTERM taken as Ctrl-C, then the command line."""
    signal.signal(signal.SIGTERM, _stop)
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        try:
            sys.stderr.write("ERROR: forecaster interrupted while starting; nothing was read or written\n")
            sys.stderr.flush()
        except (OSError, ValueError):  # stderr closed
            pass
        os._exit(EXIT_INTERRUPTED)
    run()
