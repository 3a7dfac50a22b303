"""Paired wall-time comparison of a quickstart subset: old code vs new code, in alternating rounds.

    python benchmarks/quickstart_pair.py --old /tmp/old-tree --new . --sizes 56k --tpp 5,20 \
        --rounds 2 --out /tmp/quickstart-pair

Each variant (a code tree, a `batch_models` and a worker count) runs `scaling study run` on the
same spec (studies/quickstart.toml with its sizes and budgets replaced, in a fresh storage),
then `scaling study export`; the order of the variants alternates between rounds, so a change
in the machine's load hits both sides. Prints and writes <out>/pair.json: wall seconds per
variant and round, the per-round ratios against the first variant, and the largest differences
of val_loss and ft_score between each variant's trials and the first's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def subset_spec(sizes: list[str], tpps: list[str], name: str, storage: str) -> str:
    text = (ROOT / "studies" / "quickstart.toml").read_text()
    text = re.sub(r'(?m)^name = .*$', f'name = "{name}"\nstorage = "{storage}"', text, count=1)
    text = re.sub(r'(?m)^sizes = .*$', "sizes = [" + ", ".join(f'"{s}"' for s in sizes) + "]", text, count=1)
    return re.sub(r'(?m)^budgets = .*$', "budgets = { tpp = [" + ", ".join(tpps) + "] }", text, count=1)


def run_variant(label: str, tree: Path, batch_models: int, workers: int, spec_text: str, folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    spec = folder / "spec.toml"
    spec.write_text(spec_text)
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    cmd = [sys.executable, "-m", "scaling.cli", "study", "run", str(spec), "--no-progress",
           "--workers", str(workers), "--batch-models", str(batch_models)]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    subprocess.run([sys.executable, "-m", "scaling.cli", "study", "export", str(spec), "--out", str(folder / "out"),
                    "--force"], cwd=folder, env=env, capture_output=True, text=True)
    print(f"{label}: {wall:.1f} s (exit {done.returncode})", flush=True)
    return {"label": label, "wall_s": wall, "returncode": done.returncode, "stderr_tail": done.stderr[-1500:],
            "trials": str(folder / "out" / "trials.csv")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", required=True, help="code tree of the reference (e.g. a `git archive` of main)")
    p.add_argument("--new", default=str(ROOT))
    p.add_argument("--sizes", default="56k")
    p.add_argument("--tpp", default="5,20")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--variants", default="old:1,old:6,new:6", help="tree:batch_models, the first is the reference")
    p.add_argument("--out", default="/tmp/quickstart-pair")
    args = p.parse_args()
    out = Path(args.out)
    trees = {"old": Path(args.old), "new": Path(args.new)}
    variants = [(v, trees[v.split(":")[0]], int(v.split(":")[1])) for v in args.variants.split(",")]
    sizes, tpps = args.sizes.split(","), args.tpp.split(",")
    runs: dict[str, list[dict]] = {label: [] for label, _, _ in variants}
    for r in range(args.rounds):
        for label, tree, bm in (variants if r % 2 == 0 else variants[::-1]):
            folder = out / f"{label.replace(':', '-bm')}-r{r}"
            name = "qs-pair"
            spec = subset_spec(sizes, tpps, name, f"sqlite:///{(folder / 'optuna.db').resolve()}")
            runs[label].append(run_variant(f"round {r} {label}", tree, bm, args.workers, spec, folder))
    ref = variants[0][0]
    summary: dict = {"sizes": sizes, "tpp": tpps, "workers": args.workers, "rounds": args.rounds,
                     "load_avg_end": os.getloadavg(), "variants": {}}
    ref_trials = pd.read_csv(runs[ref][0]["trials"]).set_index(["cell", "decay"]).sort_index()
    for label, _, _ in variants:
        walls = [x["wall_s"] for x in runs[label]]
        ratios = [a["wall_s"] / b["wall_s"] for a, b in zip(runs[ref], runs[label])]
        trials = pd.read_csv(runs[label][0]["trials"]).set_index(["cell", "decay"]).sort_index()
        diff = {m: float((trials[m] - ref_trials[m]).abs().max()) for m in ("val_loss", "ft_score", "probe_acc")}
        summary["variants"][label] = {"wall_s": walls, "median_wall_s": statistics.median(walls),
                                      f"speedup_vs_{ref}": ratios, "median_speedup": statistics.median(ratios),
                                      "max_abs_diff_vs_ref_round0": diff, "returncodes": [x["returncode"] for x in runs[label]]}
        print(label, json.dumps(summary["variants"][label]), flush=True)
    (out / "pair.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
