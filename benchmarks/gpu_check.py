"""GPU check, prepared for a machine with one CUDA GPU (none was available when it was written).

    .venv/bin/python benchmarks/gpu_check.py [--out results/gpu-check] [--skip-study] [--skip-compile]

1. `scaling bench` (as `scaling.bench.run_bench`) for a small and a mid ladder size, the batched
   trainer at K up to 64: tokens/s, speedups over K sequential runs, and achieved FLOP/s against
   the GPU's dense bf16 peak (table below; unknown GPUs report the ratio as null).
2. The same small-size bench with `torch.compile` on the batched trainer (compile time excluded:
   the timed runs follow an untimed warm-up).
3. A short study (`scaling study run`) on the GPU: one size, one budget, four decays.

Each step is guarded, so one failure (say, out of memory at K = 64) still leaves the others;
everything lands in <out>/gpu_check.json and a readable summary on stdout.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import time
import traceback
from pathlib import Path

import torch

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


def bench(size: str, context: int, batch: int, ks: tuple[int, ...], compile: bool, peak: float | None) -> dict:
    from scaling.bench import run_bench
    from scaling.config import RunConfig

    cfg = RunConfig(size=size, context=context, batch_size=batch, tpp=20.0, device="cuda")
    result = run_bench(cfg, steps=20, repeats=3, ks=ks, compile=compile).to_dict()
    if peak:
        result["trainer_mfu"] = result["trainer_flops_per_s"] / peak
        for row in result.get("batched", {}).values():
            row["mfu"] = row["flops_per_s"] / peak
    return result


def short_study(out: Path) -> dict:
    spec = out / "gpu-short.toml"
    spec.write_text(textwrap.dedent("""\
        name = "gpu-short"
        description = "GPU check: one size, one budget, four decays"
        sizes = ["56k"]
        budgets = { tpp = [20] }
        seeds = [0]
        tasks = ["arithmetic", "source"]
        lr = 3e-3
        schedule = "cosine"
        batch_size = 32
        context = 128

        [decay]
        grid = [0, 0.1, 1, 3]

        [run]
        device = "cuda"
        """))
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "scaling.cli", "study", "run", str(spec), "--no-progress"],
                         capture_output=True, text=True, timeout=420)
    status = subprocess.run([sys.executable, "-m", "scaling.cli", "study", "status", str(spec)],
                            capture_output=True, text=True, timeout=60)
    return {"returncode": run.returncode, "wall_s": time.perf_counter() - start,
            "stdout_tail": run.stdout[-3000:], "stderr_tail": run.stderr[-3000:], "status": status.stdout[-3000:]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/gpu-check")
    p.add_argument("--skip-study", action="store_true")
    p.add_argument("--skip-compile", action="store_true")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device; nothing to do", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(0)
    peak = bf16_peak(name)
    report: dict = {"gpu": name, "bf16_peak_flops": peak, "torch": torch.__version__}
    steps = [(f"bench_{label}", lambda s=spec: bench(*s, compile=False, peak=peak)) for label, spec in SIZES.items()]
    if not args.skip_compile:
        steps.append(("bench_small_compiled", lambda: bench(*SIZES["small"], compile=True, peak=peak)))
    if not args.skip_study:
        steps.append(("study", lambda: short_study(out)))
    for key, fn in steps:
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
    print(f"== {key} ({result['step_wall_s']:.0f} s)")
    if "error" in result:
        print("   error:", result["error"])
        return
    if key == "study":
        print(f"   returncode {result['returncode']}, {result['wall_s']:.0f} s")
        print(textwrap.indent(result["status"], "   "))
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
