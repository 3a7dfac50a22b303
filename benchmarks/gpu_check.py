"""GPU check, prepared for a machine with one CUDA GPU (none was available when it was written).

    python benchmarks/gpu_check.py [--out results/gpu-check] [--skip-study] [--skip-compile]
                                   [--deadline-s 420] [--dry-run]

1. `scaling bench` (as `scaling.train.bench.run_bench`) for a small and a mid ladder size, the batched
   trainer at K up to 64: tokens/s, speedups over K sequential runs, and achieved FLOP/s against
   the GPU's dense bf16 peak (table below; unknown GPUs report the ratio as null).
2. The same small-size bench with `torch.compile` on the batched trainer (compile time excluded:
   the timed runs follow an untimed warm-up).
3. A short study (`scaling study run`) on the GPU: one size, one budget, four decays, trained
   together (batch_models = 4); then the same size at three budgets from one WSD run per decay
   (cooldown_branches = true).

Order: both benches, the study, then the compiled bench (compile time is the least predictable).
Each step is guarded, so one failure (say, out of memory at K = 64) still leaves the others, and a
step is skipped once `--deadline-s` has passed (device time is rationed); everything lands in
<out>/gpu_check.json and a readable summary on stdout. `--dry-run` runs the same script on CPU at
toy sizes, to check the script itself before spending device time.
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


def short_study(out: Path, device: str = "cuda", size: str = "56k", tpps: tuple[float, ...] = (20,),
                branches: bool = False) -> dict:
    """A short study on the device: one size, four decays trained together (batch_models = 4);
    with `branches`, several budgets from one WSD run per decay (cooldown_branches = true)."""
    name = "gpu-branches" if branches else "gpu-short"
    spec = out / f"{name}.toml"
    schedule = "wsd" if branches else "cosine"
    extra = "cooldown_branches = true" if branches else ""
    warmup = "warmup_frac = 0.0" if branches else ""
    spec.write_text(textwrap.dedent(f"""\
        name = "{name}"
        description = "GPU check: one size, four decays trained together"
        sizes = ["{size}"]
        budgets = {{ tpp = [{", ".join(f"{t:g}" for t in tpps)}] }}
        batch_models = 4
        {extra}
        storage = "sqlite:///{out.resolve()}/{name}.db"
        seeds = [0]
        tasks = ["arithmetic", "source"]
        lr = 3e-3
        schedule = "{schedule}"
        batch_size = 32
        context = 128

        [decay]
        grid = [0, 0.1, 1, 3]

        [run]
        device = "{device}"
        {warmup}
        """))
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "scaling.cli", "study", "run", str(spec), "--no-progress"],
                         capture_output=True, text=True, timeout=240)
    status = subprocess.run([sys.executable, "-m", "scaling.cli", "study", "status", str(spec)],
                            capture_output=True, text=True, timeout=60)
    return {"returncode": run.returncode, "wall_s": time.perf_counter() - start,
            "stdout_tail": run.stdout[-3000:], "stderr_tail": run.stderr[-3000:], "status": status.stdout[-3000:]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/gpu-check")
    p.add_argument("--skip-study", action="store_true")
    p.add_argument("--skip-compile", action="store_true")
    p.add_argument("--deadline-s", type=float, default=420.0,
                   help="skip any step that would start after this many seconds")
    p.add_argument("--dry-run", action="store_true", help="toy sizes on CPU, to check the script")
    args = p.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; nothing to do (use --dry-run to test the script on CPU)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = "cpu" if args.dry_run else "cuda"
    name = "cpu (dry run)" if args.dry_run else torch.cuda.get_device_name(0)
    peak = None if args.dry_run else bf16_peak(name)
    sizes = DRY_SIZES if args.dry_run else SIZES
    opts = {"device": device, "steps": 3 if args.dry_run else 20, "repeats": 1 if args.dry_run else 3}
    report: dict = {"gpu": name, "bf16_peak_flops": peak, "torch": torch.__version__}
    steps = [(f"bench_{label}", lambda s=spec: bench(*s, compile=False, peak=peak, **opts))
             for label, spec in sizes.items()]
    if not args.skip_study:
        size = "13k" if args.dry_run else "56k"
        steps.append(("study", lambda: short_study(out, device, size, (2,) if args.dry_run else (20,))))
        steps.append(("study_branches", lambda: short_study(out, device, size, (1, 2) if args.dry_run else (5, 10, 20),
                                                            branches=True)))
    if not args.skip_compile:
        size, context, batch, ks = sizes["small"]
        # K = 1 and the largest K only: every new stacked model is a fresh compile
        steps.append(("bench_small_compiled",
                      lambda: bench(size, context, batch, (ks[0], ks[-1]), compile=True, peak=peak,
                                    **{**opts, "repeats": min(2, opts["repeats"])})))
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
    if key.startswith("study"):
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
