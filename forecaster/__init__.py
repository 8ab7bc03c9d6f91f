"""forecaster: daily stock forecasts with recurrent networks, honest evaluation, cron-safe output.

Every command of the CLI is a plain function here (imported lazily, so ``import forecaster`` and
``forecaster --help`` stay fast)::

    from forecaster import load_config, download, train, evaluate, predict, score, promote, retrain, tune

Each returns what the command prints (a result object) and raises :class:`ForecasterError`, whose
``exit_code`` is the command's, where the command fails as a whole.
"""

__version__ = "0.1.0"

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
