"""Promotions and retrainings to be killed: helper process for tests/test_loop_faults.py.

Run as ``python crash_loop.py [retrain]``. It imports the package (and torch, with
``retrain``) once, prints ``ready`` and then, for every command line read from stdin, forks a
child and prints its pid:

- ``promote RUNS RUN_A RUN_B``: the child points ``RUNS/prod`` at RUN_A and RUN_B in turn,
  for ever;
- ``retrain RUNS``: the child retrains ``prod`` once (one torch thread) and exits 0.

The parent waits for the child to end (the test SIGKILLs it at a random moment, or lets a
retraining finish) and prints ``reaped <status>``. Forking from a process that has imported
torch but never run it keeps each try to the work itself, not an interpreter's start-up.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path


def _promote_for_ever(runs: Path, a: Path, b: Path) -> None:
    from forecaster.registry import promote

    i = 0
    while True:
        promote(a if i % 2 else b, "prod", runs_dir=runs, lock_timeout=-1)
        i += 1


def _retrain_once(runs: Path) -> None:
    import torch

    from forecaster.retraining import retrain

    torch.set_num_threads(1)
    retrain("prod", runs_dir=runs, lock_timeout=-1)


def main() -> None:
    import forecaster.registry  # noqa: F401 - imported once, before forking

    if sys.argv[1:] == ["retrain"]:
        import torch._dynamo  # noqa: F401 - what torch's optimisers import when first built: seconds

        import forecaster.retraining  # noqa: F401
    print("ready", flush=True)
    for line in sys.stdin:
        mode, *args = line.split()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                if mode == "promote":
                    _promote_for_ever(*(Path(a) for a in args))
                else:
                    _retrain_once(Path(args[0]))
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            os._exit(code)
        print(pid, flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"reaped {status}", flush=True)
    os._exit(0)  # nothing to flush: skip torch's teardown


if __name__ == "__main__":
    main()
