"""forecaster: daily stock forecasts with recurrent networks, honest evaluation, cron-safe output.

Every command of the CLI is a plain function here (imported lazily, so ``import forecaster`` and
``forecaster --help`` stay fast)::

    from forecaster import load_config, download, train, evaluate, predict, score, promote, retrain, tune

Each returns what the command prints (a result object) and raises :class:`ForecasterError`, whose
``exit_code`` is the command's, where the command fails as a whole.
"""

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:  # what a type checker reads (the package ships ``py.typed``), each name
    # re-exported as such; at run time they are imported when first used (``__getattr__``)
    from .checkpoint import load_run as load_run
    from .config import Config as Config
    from .config import load_config as load_config
    from .errors import ForecasterError as ForecasterError
    from .evaluation import evaluate as evaluate
    from .prediction import predict as predict
    from .registry import list_runs as list_runs
    from .registry import promote as promote
    from .retraining import retrain as retrain
    from .scoring import score as score
    from .store import download as download
    from .store import load_bars as load_bars
    from .training import train as train
    from .tuning import tune as tune

_LAZY = {
    "Config": "config",
    "load_config": "config",
    "download": "store",
    "load_bars": "store",
    "train": "training",
    "load_run": "checkpoint",
    "list_runs": "registry",
    "evaluate": "evaluation",
    "predict": "prediction",
    "tune": "tuning",
    "score": "scoring",
    "promote": "registry",
    "retrain": "retraining",
    "ForecasterError": "errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'forecaster' has no attribute {name!r}")
