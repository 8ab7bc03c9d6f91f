"""Domain errors. Each carries the process exit code the CLI maps it to (SPEC §2)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_TEMPFAIL = 75  # EX_TEMPFAIL from sysexits.h: retry later
EXIT_INTERRUPTED = 130

RESULT = "result"
"""A log record with this attribute true (``extra={RESULT: True}``) is a command's result: the
CLI prints it on stdout, and its log file keeps it, but stderr does not repeat it."""

OPTION_NAMES: ContextVar[Mapping[str, str] | None] = ContextVar("option_names", default=None)
"""How the command line names the config keys its options set (``{"train.epochs": "--epochs"}``)
while one of its commands runs: an error in a value an option gave names the option."""


@contextmanager
def options_named(names: Mapping[str, str]) -> Iterator[None]:
    """Within it, a config error in a value that an override gave for a key of ``names`` names
    that key as ``names`` does (``--epochs: must be greater than 0``)."""
    token = OPTION_NAMES.set(dict(names))
    try:
        yield
    finally:
        OPTION_NAMES.reset(token)


class ForecasterError(Exception):
    """An error shown to the user as one line; ``exit_code`` is what the CLI exits with."""

    exit_code = EXIT_ERROR
    json_extra: dict | None = None
    """Keys the ``--json`` error object adds to the line: what one line has no room for (every
    ticker that failed, when a universe of them did)."""

    def with_json(self, **keys) -> ForecasterError:
        """This error, with ``keys`` for the ``--json`` error object."""
        self.json_extra = keys
        return self


class ConfigError(ForecasterError):
    """Bad configuration: unknown key, wrong type, impossible combination."""


class DataError(ForecasterError):
    """Bad or missing price data (names the ticker, and the date and column when known)."""


class TickerError(DataError):
    """A symbol that is not a valid Yahoo-style ticker, or one unknown to the source."""


class RunFormatError(ForecasterError):
    """A run directory that cannot be loaded: missing files, wrong format version, bad tensors."""


class RunWriteError(ForecasterError):
    """A run directory that cannot be written (a full disk, a read-only folder): nothing of
    it is changed."""


class TrainingError(ForecasterError):
    """Training could not go on (NaN / infinite loss, no usable windows)."""


class TemporaryFailure(ForecasterError):
    """Worth retrying later: the network is down or rate-limited, or another run holds a lock."""

    exit_code = EXIT_TEMPFAIL


class NetworkError(TemporaryFailure):
    """The data source could not be reached (DNS, connection refused, timeout)."""


class ServerError(NetworkError):
    """The data source answered with a server error (HTTP 5xx)."""


class RateLimitError(TemporaryFailure):
    """The data source answered HTTP 429 (too many requests)."""


class LockBusy(TemporaryFailure):
    """Another forecaster process holds the lock on what this one wants to write."""


class NoUsableBars(DataError):
    """Bars of which no row has a date and all four prices, or a file with a header and no
    rows: nothing to read (train and tune skip such a ticker, as one too short for its window)."""
