"""GPU check for a machine with one CUDA GPU: the figures of issue 14 in one run under 8 minutes.

    python benchmarks/gpu_check.py [--out results/gpu-check] [--skip-ladder] [--skip-compile]
                                   [--deadline-s 450] [--dry-run]

1. Whole trials (`scaling bench --unit`, `scaling.train.bench_unit`): K = 32 complete trials at
   101k (pretrain, probes, fine-tune, score) as one stacked unit against trials one after
   another (3 run; their mean per trial scaled to 32), trials/hour and phase shares.
   Target: >= 10x.
2. Stacked pretraining (`scaling bench`, `scaling.train.bench.run_bench`) at 101k and 2.7m up to
   K = 64: tokens/s, speedups over K sequential runs, and achieved FLOP/s against the GPU's dense
   bf16 peak (table below; unknown GPUs report the ratio as null). Target at 2.7m, K = 64: >= 20%.
3. A small GPU ladder through `scaling run` (101k, 332k, 804k at 20 TPP, four decays stacked per
   cell): the whole main job into results/gpu-ladder/ (the report included), to commit.
4. The compiled step (`compile = true`: torch.compile as one graph, replayed as CUDA graphs)
   against the eager one at 101k, K = 32 and 2.7m, K = 64 (`scaling.train.bench_compile`):
   ms/step side by side, compile cost, TFLOP/s and share of the bf16 peak, host syncs per step.
   Runs before the ladder; --skip-compile leaves it out.

Each step is guarded, so one failure (say, out of memory at K = 64) still leaves the others, and a
step is skipped once `--deadline-s` has passed (device time is rationed); everything lands in
<out>/gpu_check.json and a readable summary on stdout. `--dry-run` runs the same script on CPU at
toy sizes (in <out>, the ladder too), to check the script itself before spending device time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

# dense bf16 tensor-core peaks, FLOP/s (vendor datasheets; SXM parts)
BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12, "L40S": 362e12}

SIZES = {  # name -> (ladder size, context, batch size, K values)
    "small": ("101k", 128, 32, (1, 8, 32, 64)),
    "mid": ("2.7m", 256, 16, (1, 4, 16, 64)),
}


def bf16_peak(name: str) -> float | None:
    for key, peak in BF16_PEAK.items():
        if key in name:
            return peak
    return None


DRY_SIZES = {"small": ("13k", 32, 4, (1, 2)), "mid": ("56k", 32, 4, (1, 2))}


def bench(size: str, context: int, batch: int, ks: tuple[int, ...], compile: bool, peak: float | None,
          device: str = "cuda", steps: int = 20, repeats: int = 3) -> dict:
    from scaling.train.bench import run_bench
    from scaling.config import RunConfig

    cfg = RunConfig(size=size, context=context, batch_size=batch, tpp=20.0, device=device)
    result = run_bench(cfg, steps=steps, repeats=repeats, ks=ks, compile=compile).to_dict()
    if peak:
        result["trainer_mfu"] = result["trainer_flops_per_s"] / peak
        for row in result.get("batched", {}).values():
            row["mfu"] = row["flops_per_s"] / peak
    return result


def compiled_step(size: str, context: int, batch: int, k: int, peak: float | None, device: str, blocks: int,
                  steps: int) -> dict:
    """The stacked step eager vs compiled (CUDA graphs), with the share of the bf16 peak."""
    from scaling.config import RunConfig
    from scaling.train.bench_compile import compare_compiled_step

    cfg = RunConfig(size=size, context=context, batch_size=batch, tpp=20.0, device=device, lr=3e-3)
    result = compare_compiled_step(cfg, k, torch.device(device), blocks=blocks, steps=steps)
    if peak:
        result["eager_mfu"] = result["eager_flops_per_s"] / peak
        result["compiled_mfu"] = result["compiled_flops_per_s"] / peak
    return result


def unit_bench(size: str, context: int, batch: int, k: int, tpp: float, sequential: int, device: str = "cuda",
               repeats: int = 1, tasks: tuple[str, ...] = ("arithmetic", "source")) -> dict:
    """K whole trials stacked against `sequential` trials one after another (scaled to K)."""
    from scaling.config import RunConfig
    from scaling.train.bench_unit import run_unit_bench

    cfg = RunConfig(size=size, context=context, batch_size=batch, tpp=tpp, device=device, tasks=tasks, lr=3e-3)
    return run_unit_bench(cfg, (1, k), repeats=repeats, sequential_trials=sequential).to_dict()


LADDER_SPEC = """\
name = "{name}"
description = "GPU ladder (benchmarks/gpu_check.py): {sizes} at {tpps} TPP, four decays stacked per cell"
sizes = [{size_list}]
budgets = {{ tpp = [{tpps}] }}
batch_models = 4
seeds = [0]
tasks = ["arithmetic", "source"]
lr = 3e-3
schedule = "cosine"
batch_size = 32
context = 128
storage = "sqlite:///{db}"

[decay]
grid = [0, 0.1, 1, 3]

[run]
device = "{device}"
"""


def ladder(out: Path, cwd: Path, name: str, sizes: tuple[str, ...], tpps: tuple[float, ...], device: str,
           timeout: float) -> dict:
    """`scaling run` on a small ladder: results/<name>/ under `cwd` (the repository on a GPU)."""
    spec = out / f"{name}.toml"
    text = LADDER_SPEC.format(name=name, sizes=", ".join(sizes), size_list=", ".join(f'"{s}"' for s in sizes),
                              tpps=", ".join(f"{t:g}" for t in tpps), db=(out / f"{name}.db").resolve(),
                              device=device)
    spec.write_text(text)
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "scaling.cli", "run", str(spec.resolve()), "--no-progress",
                          "--bootstrap", "50"], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    status = subprocess.run([sys.executable, "-m", "scaling.cli", "study", "status", str(spec.resolve())],
                            cwd=cwd, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    return {"returncode": run.returncode, "wall_s": time.perf_counter() - start, "results": str(cwd / "results" / name),
            "stdout_tail": run.stdout[-3000:], "stderr_tail": run.stderr[-3000:], "status": status.stdout[-3000:]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/gpu-check")
    p.add_argument("--skip-ladder", action="store_true")
    p.add_argument("--skip-compile", action="store_true", dest="skip_compile",
                   help="leave out the compiled-step (CUDA graph) comparison")
    p.add_argument("--deadline-s", type=float, default=450.0,
                   help="skip any step that would start after this many seconds")
    p.add_argument("--dry-run", action="store_true", help="toy sizes on CPU, to check the script")
    args = p.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; nothing to do (use --dry-run to test the script on CPU)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dry = args.dry_run
    if dry:
        torch.set_num_threads(1)  # a shared CPU: one thread per process, as study workers use
    device = "cpu" if dry else "cuda"
    name = "cpu (dry run)" if dry else torch.cuda.get_device_name(0)
    peak = None if dry else bf16_peak(name)
    sizes = DRY_SIZES if dry else SIZES
    opts = {"device": device, "steps": 3 if dry else 20, "repeats": 1 if dry else 3}
    report: dict = {"gpu": name, "bf16_peak_flops": peak, "torch": torch.__version__}
    steps = [("unit_101k", lambda: unit_bench(*(("13k", 32, 4, 2, 0.3, 1) if dry else ("101k", 128, 32, 32, 20.0, 3)),
                                              device=device))]
    steps += [(f"bench_{label}", lambda s=spec: bench(*s, compile=False, peak=peak, **opts))
              for label, spec in sizes.items()]
    if not args.skip_compile:
        for label, (size, context, batch, ks) in sizes.items():
            steps.append((f"compile_{label}", lambda s=size, c=context, b=batch, k=ks[-1]:
                          compiled_step(s, c, b, k, peak, device, blocks=2 if dry else 6, steps=3 if dry else 20)))
    if not args.skip_ladder:
        steps.append(("ladder", lambda: ladder(out, out if dry else ROOT, "gpu-ladder-dry" if dry else "gpu-ladder",
                                               ("13k",) if dry else ("101k", "332k", "804k"), (0.3,) if dry else (20,),
                                               device, timeout=240 if dry else 300)))
    for key, fn in steps:
        if time.perf_counter() - t0 > args.deadline_s:
            report[key] = {"skipped": f"deadline of {args.deadline_s:.0f} s passed", "step_wall_s": 0.0}
            (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
            print(f"== {key}: skipped (deadline)", flush=True)
            continue
        start = time.perf_counter()
        try:
            report[key] = fn()
        except Exception as exc:  # keep going: one failure must not hide the other figures
            report[key] = {"error": repr(exc), "traceback": traceback.format_exc()[-2000:]}
        report[key]["step_wall_s"] = time.perf_counter() - start
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
        summarize(key, report[key])
    return 0


def summarize(key: str, result: dict) -> None:
    print(f"== {key} ({result['step_wall_s']:.0f} s)", flush=True)
    if "error" in result:
        print("   error:", result["error"])
        return
    if key == "ladder":
        print(f"   returncode {result['returncode']}, {result['wall_s']:.0f} s -> {result['results']}")
        print(textwrap.indent(result["status"], "   "))
        return
    if key.startswith("unit"):
        for k, rate in result["unit_trials_per_hour"].items():
            print(f"   K={k:>3}: {rate['stacked']:>10,.0f} trials/h stacked, {rate['sequential']:>8,.0f} one after "
                  f"another, speedup {result['unit_speedup'][k]:.2f}"
                  + (" (sequential scaled from fewer trials)" if int(k) in result["sequential_extrapolated"] else ""))
        shares = result["unit_phase_share"]
        for k in result["ks"]:
            print(f"   K={k} phase shares: " + ", ".join(f"{p} {100 * v:.0f}%" for p, v in shares[str(k)]["stacked"].items()))
        return
    if key.startswith("compile"):
        from scaling.train.bench_compile import describe

        print("   " + describe(result) + (f"; bf16 peak share: eager {100 * result['eager_mfu']:.2f}%, compiled "
                                         f"{100 * result['compiled_mfu']:.2f}%" if "compiled_mfu" in result else ""))
        return
    cfg = result["config"]
    print(f"   size {cfg['size']}, context {cfg['context']}, batch {cfg['batch_size']}: reference "
          f"{result['reference_tokens_per_s']:,.0f} tok/s, trainer {result['trainer_tokens_per_s']:,.0f} tok/s "
          f"(ratio {result['ratio_vs_reference']:.2f}, {result['trainer_flops_per_s'] / 1e12:.2f} TFLOP/s"
          + (f", {100 * result['trainer_mfu']:.2f}% of bf16 peak)" if "trainer_mfu" in result else ")"))
    for k, row in result.get("batched", {}).items():
        print(f"   K={k:>3}: {row['total_tokens_per_s']:>12,.0f} tok/s total, speedup "
              f"{result['speedup_batched'][k]:.2f}, {row['flops_per_s'] / 1e12:.2f} TFLOP/s"
              + (f" ({100 * row['mfu']:.2f}% of bf16 peak)" if "mfu" in row else ""))


if __name__ == "__main__":
    sys.exit(main())
