"""Time N processes claiming every WAITING trial of one SQLite study (scaling.study claims).

    python benchmarks/claim_race.py [--trials 90] [--procs 3] [--repeats 5]

Prints the wall seconds of each repeat and their median; fails if any trial was claimed twice.
Runs against the checkout on PYTHONPATH, also at commits before claim.py existed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time

import optuna

from scaling.study.storage import open_storage


def _claimer(url: str, barrier, results) -> None:
    storage = open_storage(url)
    study = optuna.load_study(study_name="race", storage=storage)
    try:
        from scaling.study.claim import claim

        def pop():
            got = claim(storage, study)
            return None if got is None else got.trial_id
    except ImportError:  # before the worker split: claim(study) -> trial id
        from scaling.study.worker import claim as old_claim

        def pop():
            return old_claim(study)
    barrier.wait()
    claimed = []
    while (trial_id := pop()) is not None:
        claimed.append(trial_id)
    results.put(claimed)


def race(trials: int, procs: int) -> float:
    url = f"sqlite:///{tempfile.mkdtemp()}/race.db"
    study = optuna.create_study(study_name="race", storage=open_storage(url))
    for i in range(trials):
        study.enqueue_trial({"x": i})
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(procs + 1), ctx.Queue()
    workers = [ctx.Process(target=_claimer, args=(url, barrier, results)) for _ in range(procs)]
    for w in workers:
        w.start()
    barrier.wait()
    start = time.perf_counter()
    claimed = [t for _ in workers for t in results.get(timeout=300)]
    wall = time.perf_counter() - start
    for w in workers:
        w.join()
    assert sorted(claimed) == sorted(set(claimed)) and len(claimed) == trials, "a trial was claimed twice"
    return wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=90)
    p.add_argument("--procs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    walls = [race(args.trials, args.procs) for _ in range(args.repeats)]
    print(" ".join(f"{w:.2f}" for w in walls), f"median {statistics.median(walls):.2f} s")


if __name__ == "__main__":
    main()
