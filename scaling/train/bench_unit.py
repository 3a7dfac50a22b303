"""Whole-trial benchmark (`scaling bench --unit`): K complete trials (pretrain, probes,
fine-tune, score) as one stacked unit (`run_pipeline_batched`) against K trials one after
another (`run_pipeline`), in the same process, interleaved per repeat.

Per repeat: one sequential pass over the largest K's configs (its first K trials time "K one
after another") and one stacked unit per K, the two sides in alternating order. Speedups are medians of per-repeat ratios, as in
`scaling.train.bench`; phase shares come from `scaling.train.phases`.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from scaling.config import RunConfig
from scaling.train.phases import PHASES, recording

# decays of the K trials of a unit (cycled with a new seed past the list's end)
UNIT_DECAYS = (0.0, 0.03, 0.1, 0.3, 1.0, 3.0)


def unit_configs(cfg: RunConfig, k: int) -> list[RunConfig]:
    """K configs of one cell that differ in decay (and seed once the decays run out)."""
    return [cfg.replace(decay=UNIT_DECAYS[i % len(UNIT_DECAYS)], seed=cfg.seed + i // len(UNIT_DECAYS))
            for i in range(k)]


@dataclass
class UnitBenchResult:
    config: dict[str, Any]
    ks: tuple[int, ...]
    sequential_s: dict[int, list[float]] = field(default_factory=dict)  # K -> wall s of K trials, per repeat
    stacked_s: dict[int, list[float]] = field(default_factory=dict)
    sequential_phases: list[dict[str, float]] = field(default_factory=list)  # per trial of every pass
    stacked_phases: dict[int, list[dict[str, float]]] = field(default_factory=dict)
    sequential_trials: int = 0  # trials actually run one after another per repeat
    # the same runs in CPU seconds of this process: fairer than wall time on a shared CPU
    sequential_cpu_s: dict[int, list[float]] = field(default_factory=dict)
    stacked_cpu_s: dict[int, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        def share(clocks: list[dict[str, float]]) -> dict[str, float]:
            totals = {p: sum(c.get(p, 0.0) for c in clocks) for p in PHASES}
            whole = sum(totals.values()) or 1.0
            return {p: totals[p] / whole for p in PHASES}

        per_trial = self.sequential_phases
        out: dict[str, Any] = {"config": self.config, "ks": list(self.ks), "threads": torch.get_num_threads(),
                               "unit_trials_per_hour": {}, "unit_speedup": {}, "unit_phase_share": {},
                               "runs_s": {"sequential": {str(k): v for k, v in self.sequential_s.items()},
                                          "stacked": {str(k): v for k, v in self.stacked_s.items()}}}
        for k in self.ks:
            seq, stk = self.sequential_s[k], self.stacked_s[k]
            out["unit_trials_per_hour"][str(k)] = {"stacked": 3600 * k / statistics.median(stk),
                                                   "sequential": 3600 * k / statistics.median(seq)}
            out["unit_speedup"][str(k)] = statistics.median(a / b for a, b in zip(seq, stk))
            out["unit_phase_share"][str(k)] = {"stacked": share(self.stacked_phases[k])}
        out["unit_phase_share"]["sequential"] = share(per_trial)
        out["sequential_trials"] = self.sequential_trials
        if self.stacked_cpu_s:
            out["unit_speedup_cpu_time"] = {str(k): statistics.median(
                a / b for a, b in zip(self.sequential_cpu_s[k], self.stacked_cpu_s[k])) for k in self.ks}
        out["sequential_extrapolated"] = [k for k in self.ks if k > self.sequential_trials]
        return out


def run_unit_bench(cfg: RunConfig, ks: Sequence[int], repeats: int = 3,
                   sequential_trials: int | None = None) -> UnitBenchResult:
    """Interleaved repeats of K trials one after another and as one stacked unit, for each K.

    `sequential_trials`: run at most this many trials one after another per repeat; a larger K's
    sequential time is then that pass's mean time per trial times K (trials one after another are
    independent and alike), and the result says so (`sequential_extrapolated`)."""
    from scaling.data.tokens import load_pretrain_data
    from scaling.train.pipeline import run_pipeline, run_pipeline_batched
    from scaling.train.stacked import tune_cpu_allocator

    if str(cfg.device) in ("cpu", "auto") and not torch.cuda.is_available():
        tune_cpu_allocator()  # as the stacked trainer does, so both paths share the allocator settings
    load_pretrain_data(cfg.corpus, cfg.tokenizer)  # the token cache, built once before timing
    ks = tuple(sorted(set(ks)))
    result = UnitBenchResult(config=cfg.to_dict(), ks=ks)
    configs = unit_configs(cfg, max(ks))
    n_sequential = min(max(ks), sequential_trials or max(ks))
    result.sequential_trials = n_sequential

    def sequential() -> None:
        ends, cpu_ends, start, cpu_start = [], [], time.perf_counter(), time.process_time()
        for c in configs[:n_sequential]:
            with recording() as clock:
                run_pipeline(c)
            result.sequential_phases.append(dict(clock))
            ends.append(time.perf_counter() - start)
            cpu_ends.append(time.process_time() - cpu_start)
        for k in ks:
            for store, at in ((result.sequential_s, ends), (result.sequential_cpu_s, cpu_ends)):
                store.setdefault(k, []).append(at[k - 1] if k <= n_sequential else at[-1] / n_sequential * k)

    def stacked(order: Sequence[int]) -> None:
        for k in order:
            start, cpu_start = time.perf_counter(), time.process_time()
            with recording() as clock:
                run_pipeline_batched(configs[:k])
            result.stacked_s.setdefault(k, []).append(time.perf_counter() - start)
            result.stacked_cpu_s.setdefault(k, []).append(time.process_time() - cpu_start)
            result.stacked_phases.setdefault(k, []).append(dict(clock))

    for repeat in range(repeats):
        # alternate the order, so neither side always runs on the other's leftovers
        if repeat % 2 == 0:
            sequential()
            stacked(ks)
        else:
            stacked(ks[::-1])
            sequential()
    return result
