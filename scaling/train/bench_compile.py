"""The stacked training step eager against compiled (`compile = true`: torch.compile, CUDA graphs
on a GPU), side by side in one process: interleaved blocks of steps, medians, the one-time
compile cost, achieved FLOP/s, and on CUDA the host syncs per step (the step loop should have
none but the periodic loss readback)."""

from __future__ import annotations

import statistics
import time
import warnings
from typing import Any

import torch

from scaling.config import RunConfig, model_shape
from scaling.core.shapes import train_flops_per_token


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def host_syncs_per_step(run: Any, start: int, steps: int) -> float:
    """CUDA host synchronisations per training step of `run`, counted by PyTorch's sync debug
    mode (warnings) over `steps` steps; includes the loss readback's one per interval."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for step in range(start, start + steps):
                run.train_step(step, 1e-3)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message).lower() for w in caught) / steps


def compare_compiled_step(cfg: RunConfig, k: int, device: torch.device, blocks: int = 6, steps: int = 20
                          ) -> dict[str, Any]:
    """ms per step of K stacked models eager and compiled (medians of `blocks` interleaved blocks
    of `steps` steps), their ratio, setup seconds (model, compile, first 3 steps) and TFLOP/s."""
    from scaling.data.tokens import load_pretrain_data
    from scaling.train.stacked import StackedRun

    data = load_pretrain_data(cfg.corpus, cfg.tokenizer)
    vocab = data.tokenizer.vocab_size
    configs = [cfg.replace(decay=0.1 * i) for i in range(k)]
    runs, setup = {}, {}
    for compiled in (False, True):
        start = time.perf_counter()
        runs[compiled] = StackedRun(configs, data.train, vocab, device, compile=compiled)
        for step in range(3):  # the compile (and CUDA graph recording) happens here
            runs[compiled].train_step(step, 1e-3)
        runs[compiled].sync()
        _sync(device)
        setup[compiled] = time.perf_counter() - start
    times: dict[bool, list[float]] = {False: [], True: []}
    step = 3
    for block in range(blocks):
        for compiled in ((False, True) if block % 2 == 0 else (True, False)):
            start = time.perf_counter()
            for s in range(step, step + steps):
                runs[compiled].train_step(s, 1e-3)
            runs[compiled].sync()
            _sync(device)
            times[compiled].append((time.perf_counter() - start) / steps)
        step += steps
    eager, compiled = statistics.median(times[False]), statistics.median(times[True])
    flops_per_step = k * cfg.batch_tokens * train_flops_per_token(model_shape(cfg), vocab, cfg.context)
    out: dict[str, Any] = {"size": cfg.size, "k": k, "device": str(device), "blocks": blocks, "steps": steps,
                           "eager_ms": 1e3 * eager, "compiled_ms": 1e3 * compiled, "speedup": eager / compiled,
                           "setup_s": {"eager": setup[False], "compiled": setup[True]},
                           "eager_flops_per_s": flops_per_step / eager, "compiled_flops_per_s": flops_per_step / compiled,
                           "block_ms": {"eager": [1e3 * t for t in times[False]],
                                        "compiled": [1e3 * t for t in times[True]]}}
    if device.type == "cuda":
        out["host_syncs_per_step"] = {name: host_syncs_per_step(runs[c], step + 100, 32)
                                      for name, c in (("eager", False), ("compiled", True))}
    return out


def describe(result: dict[str, Any]) -> str:
    text = (f"{result['size']}, K = {result['k']}, {result['device']}: eager {result['eager_ms']:.1f} ms/step, "
            f"compiled {result['compiled_ms']:.1f} ms/step, ratio {result['speedup']:.2f} (medians of "
            f"{result['blocks']} interleaved blocks of {result['steps']} steps); setup + 3 steps: eager "
            f"{result['setup_s']['eager']:.1f} s, compiled {result['setup_s']['compiled']:.1f} s; "
            f"{result['eager_flops_per_s'] / 1e12:.3f} vs {result['compiled_flops_per_s'] / 1e12:.3f} TFLOP/s")
    if "host_syncs_per_step" in result:
        syncs = result["host_syncs_per_step"]
        text += f"; host syncs per step: eager {syncs['eager']:.2f}, compiled {syncs['compiled']:.2f}"
    return text
