"""Token budgets from one run: a shared warmup-stable phase and cooldown branches.

With the warmup-stable-decay (WSD) schedule the learning rate is constant until the last
`cooldown_frac` of the steps, so the runs for several budgets D_1 < D_2 < ... agree step for step
until each one's cooldown starts (Hagele et al. 2024, "Scaling Laws and Compute-Optimal Training
Beyond Fixed Training Durations", sec. 3-4). One stable run per (size, decay) is therefore
enough: at step S_b - C_b (S_b steps of budget b, C_b = round(cooldown_frac * S_b) cooldown
steps) copy weights and optimizer state and run that budget's (1 - sqrt) cooldown on the copy.
The tokens axis then costs about max(S_b) + sum(C_b) steps instead of sum(S_b).

Exactness. Batches are a function of (seed, step) only (`scaling.data.tokens.Batches`), so a
branch sees exactly the data of its own full run. The one difference is warmup: a full WSD run
of budget b warms up over round(warmup_frac * S_b) steps, which grows with the budget, while the
shared run can have only one warmup. We use the warmup of the smallest budget for all (the
choice of Hagele et al., who fix the warmup length across durations), so:
- the smallest budget, and every budget whose own warmup rounds to the same number of steps
  (always, with warmup_frac = 0), is exact: its branch reproduces the full run (same
  operations in the same order: bit-identical on CPU), flagged `schedule_exact = True`;
- larger budgets get a shorter warmup than their stand-alone run (`schedule_exact = False`).
  `compare_with_full_runs` measures what that costs in val_loss.

Measured (benchmarks/bench_cooldown.py, context 128, WSD, cooldown_frac 0.2, warmup_frac 0.1):
at 13k (batch 32, decays 0 / 0.1 / 1, budgets 5 / 10 / 20 / 40 TPP) the inexact branches ended
0.014-0.016 nats below their full runs at 10 TPP, 0.027-0.034 at 20 and 0.059-0.066 at 40, nearly
the same for every decay; at 56k (batch 16, decays 0 / 0.1 / 1 / 3, budgets 5 / 10 / 20 TPP) they
ended -0.054 to +0.041 off, with a sign that changed with the decay. With warmup_frac = 0 every
branch equalled its full run (all 12 at 56k: difference 0.0000), so studies require it
(`cooldown_branches` in a spec).

Each branch's metrics are those of a run with `tokens = D_b` (steps, n_tokens, tpp, tau are the
budget's), plus `branch_step` (where it left the shared run), `warmup_steps` (the shared warmup),
`schedule_exact`, `cooldown_s` (its own cooldown's training time) and `train_s` = the shared
stable time up to the branch plus `cooldown_s`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from scaling.batched import BatchedResult, StackedRun, check_stackable, finish_pipeline, pretrain_batched
from scaling.config import RunConfig
from scaling.errors import ConfigError
from scaling.model import non_embedding_params
from scaling.train import model_shape, resolve_device, token_budget, warmup_steps


def wsd_multiplier(step: int, steps: int, warmup: int, cooldown: int, final_lr_frac: float) -> float:
    """LR multiplier of update `step` of a WSD run with explicit warmup and cooldown lengths in
    steps: linear warmup, constant, then 1 - sqrt decay to `final_lr_frac` at the last step.
    Equals `scaling.train.lr_multiplier(..., schedule="wsd")` when `warmup` and `cooldown` are that
    run's own rounded lengths."""
    if step < warmup:
        return (step + 1) / warmup
    start = steps - cooldown
    if cooldown == 0 or step < start:
        return 1.0
    progress = (step - start + 1) / cooldown
    return final_lr_frac + (1 - final_lr_frac) * (1 - math.sqrt(min(progress, 1.0)))


@dataclass(frozen=True)
class Branch:
    """One budget's cooldown: leave the shared run at `start`, cool down for `cooldown` steps."""

    tokens: int  # the budget rounded to whole steps
    steps: int
    cooldown: int
    own_warmup: int  # warmup steps of this budget's own full WSD run

    @property
    def start(self) -> int:
        return self.steps - self.cooldown


@dataclass(frozen=True)
class CooldownPlan:
    warmup: int  # the shared warmup (that of the smallest budget)
    branches: tuple[Branch, ...]  # by budget, ascending

    @property
    def stable_steps(self) -> int:
        """Steps the shared run takes before the last branch leaves it."""
        return max(b.start for b in self.branches)

    def exact(self, branch: Branch) -> bool:
        return branch.own_warmup == self.warmup

    @property
    def total_steps(self) -> int:
        """Optimizer steps the whole plan costs (one stable run plus every cooldown)."""
        return self.stable_steps + sum(b.cooldown for b in self.branches)


def plan_cooldowns(cfg: RunConfig, budgets: Sequence[int]) -> CooldownPlan:
    """Steps, cooldown lengths and branch points of `budgets` (tokens) under `cfg`'s WSD schedule."""
    if cfg.schedule != "wsd":
        raise ConfigError(f"schedule: cooldown branches need the 'wsd' schedule, got {cfg.schedule!r}")
    if not budgets:
        raise ConfigError("budgets: expected at least one token budget")
    n_params = non_embedding_params(model_shape(cfg))
    branches: dict[int, Branch] = {}
    for tokens in budgets:
        if isinstance(tokens, bool) or not isinstance(tokens, (int, np.integer)) or tokens <= 0:
            raise ConfigError(f"budgets: expected positive whole numbers of tokens, got {tokens!r}")
        steps, n_tokens = token_budget(cfg.replace(tokens=int(tokens), tpp=None), n_params)
        if steps in branches:
            raise ConfigError(f"budgets: {tokens} tokens rounds to {steps} steps of {cfg.batch_tokens} tokens, "
                              f"like another budget; give budgets at least one step apart")
        cooldown = max(1, round(cfg.cooldown_frac * steps)) if cfg.cooldown_frac > 0 else 0
        branches[steps] = Branch(n_tokens, steps, cooldown, warmup_steps(steps, cfg.warmup_frac))
    ordered = tuple(branches[s] for s in sorted(branches))
    return CooldownPlan(warmup=ordered[0].own_warmup, branches=ordered)


def pretrain_batched_with_cooldowns(configs: Sequence[RunConfig], budgets: Sequence[int], train_tokens: np.ndarray,
                                    val_tokens: np.ndarray, vocab_size: int, device: torch.device | None = None,
                                    compile: bool = False) -> list[list[BatchedResult]]:
    """K models (configs differing only in decay/seed, schedule 'wsd') at every budget in
    `budgets` (tokens) from one shared stable phase. Returns results[config][budget], budgets in
    ascending order of their rounded step counts (see `plan_cooldowns`); the configs' own token
    budget is ignored."""
    from scaling.data.tokens import eval_windows

    check_stackable(configs)
    cfg = configs[0]
    plan = plan_cooldowns(cfg, budgets)
    device = device or resolve_device(cfg.device)
    run = StackedRun(configs, train_tokens, vocab_size, device, compile=compile)
    val_windows = eval_windows(val_tokens, cfg.eval_tokens, cfg.context)
    curve_val = val_windows[: max(1, len(val_windows) // 4)]
    every = {b.steps: cfg.eval_every or max(1, b.steps // 10) for b in plan.branches}
    shared_lr = [cfg.lr * wsd_multiplier(s, plan.stable_steps + 1, plan.warmup, 0, cfg.final_lr_frac)
                 for s in range(plan.stable_steps)]

    results: dict[int, list[BatchedResult]] = {}
    stable_time, step = 0.0, 0
    for index, branch in enumerate(plan.branches):
        start = time.perf_counter()
        eval_time = 0.0
        while step < branch.start and run.any_alive:
            run.train_step(step, shared_lr[step])
            step += 1
            # the points of each branch's own curve grid that lie on the shared stretch
            if any(step % every[b.steps] == 0 and step <= b.start for b in plan.branches):
                eval_start = time.perf_counter()
                run.record_curve(step, step * cfg.batch_tokens, shared_lr[step - 1], curve_val)
                eval_time += time.perf_counter() - eval_start
        stable_time += time.perf_counter() - start - eval_time
        last = index == len(plan.branches) - 1
        branch_run = run if last else run.clone()
        results[branch.steps] = _cool_down(branch_run, branch, plan, configs, stable_time, every[branch.steps],
                                           curve_val, val_windows)
    return [[results[b.steps][k] for b in plan.branches] for k in range(len(configs))]


def _cool_down(run: StackedRun, branch: Branch, plan: CooldownPlan, configs: Sequence[RunConfig],
               stable_time: float, eval_every: int, curve_val: np.ndarray,
               val_windows: np.ndarray) -> list[BatchedResult]:
    cfg = configs[0]
    # the shared curve has the points of every budget's grid; keep this budget's own (their
    # train_loss averages the steps since the previous shared point: curves are informational)
    run.curves = [[p for p in curve if p["step"] % eval_every == 0] for curve in run.curves]
    start, eval_time = time.perf_counter(), 0.0
    for step in range(branch.start, branch.steps):
        if not run.any_alive:
            break
        lr = cfg.lr * wsd_multiplier(step, branch.steps, plan.warmup, branch.cooldown, cfg.final_lr_frac)
        run.train_step(step, lr)
        if (step + 1) % eval_every == 0 or step == branch.steps - 1:
            eval_start = time.perf_counter()
            run.record_curve(step + 1, (step + 1) * cfg.batch_tokens, lr, curve_val)
            eval_time += time.perf_counter() - eval_start
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    cooldown_time = time.perf_counter() - start - eval_time
    train_time = stable_time + cooldown_time
    budget_configs = [c.replace(tokens=branch.tokens, tpp=None) for c in configs]
    extra = {"branch_step": branch.start, "warmup_steps": plan.warmup, "schedule_exact": plan.exact(branch),
             "cooldown_s": cooldown_time}
    return run.results(budget_configs, branch.steps, branch.tokens, train_time, val_windows, extra=extra)


def pretrain_with_cooldowns(cfg: RunConfig, budgets: Sequence[int], train_tokens: np.ndarray, val_tokens: np.ndarray,
                            vocab_size: int, device: torch.device | None = None,
                            compile: bool = False) -> list[BatchedResult]:
    """One model at every budget in `budgets` (tokens) from one shared stable phase; one result
    per budget, ascending. See the module docstring for what is exact and what is approximated."""
    return pretrain_batched_with_cooldowns([cfg], budgets, train_tokens, val_tokens, vocab_size, device,
                                           compile)[0]


def compare_with_full_runs(configs: Sequence[RunConfig], budgets: Sequence[int], train_tokens: np.ndarray,
                           val_tokens: np.ndarray, vocab_size: int,
                           device: torch.device | None = None) -> list[dict[str, Any]]:
    """val_loss of each cooldown branch against a separate full WSD run at the same budget (each
    with its own warmup), per config and budget; also the steps and time each way costs (wall:
    everything, evaluations included; train: optimizer steps only)."""
    plan = plan_cooldowns(configs[0], budgets)
    start = time.perf_counter()
    branched = pretrain_batched_with_cooldowns(configs, budgets, train_tokens, val_tokens, vocab_size, device)
    branch_wall = time.perf_counter() - start
    start = time.perf_counter()
    full = [pretrain_batched([c.replace(tokens=b.tokens, tpp=None) for c in configs], train_tokens, val_tokens,
                             vocab_size, device=device) for b in plan.branches]
    full_wall = time.perf_counter() - start
    # training time only (evaluations excluded, as train_s): one stable phase plus every cooldown
    branch_metrics = [r.metrics for r in branched[0]]
    train_branched = max(m["train_s"] - m["cooldown_s"] for m in branch_metrics) + sum(
        m["cooldown_s"] for m in branch_metrics)
    train_full = sum(f[0].metrics["train_s"] for f in full)
    rows = []
    for k, cfg in enumerate(configs):
        for j, branch in enumerate(plan.branches):
            mine, theirs = branched[k][j].metrics, full[j][k].metrics
            rows.append({
                "decay": cfg.decay, "seed": cfg.seed, "tokens": branch.tokens, "steps": branch.steps,
                "branch_step": branch.start, "schedule_exact": plan.exact(branch),
                "own_warmup_steps": branch.own_warmup, "shared_warmup_steps": plan.warmup,
                "val_loss_branch": mine["val_loss"], "val_loss_full": theirs["val_loss"],
                "val_loss_diff": mine["val_loss"] - theirs["val_loss"],
                "steps_branched": plan.total_steps, "steps_full": sum(b.steps for b in plan.branches),
                "wall_s_branched": branch_wall, "wall_s_full": full_wall,
                "train_s_branched": train_branched, "train_s_full": train_full,
            })
    return rows


def run_pipeline_with_cooldowns(configs: Sequence[RunConfig], budgets: Sequence[int],
                                compile: bool = False) -> list[list[dict[str, Any]]]:
    """`scaling.pipeline.run_pipeline` for K configs at every budget in `budgets` (tokens): one
    shared stable phase with a cooldown branch per budget (`pretrain_batched_with_cooldowns`),
    then probes and fine-tuning of every branch's model exactly as `run_pipeline` does.

    Returns metrics[config][budget], budgets ascending (as `plan_cooldowns` orders them); each
    dict has `run_pipeline`'s keys for a run of `tokens` = that budget, plus the branch's
    `branch_step`, `warmup_steps`, `schedule_exact` and `cooldown_s`, and `cooldown_branch` =
    True. A model that diverged does not raise: its dicts carry `error`, `diverged_step` and
    `diverged_phase` (`scaling.batched.finish_pipeline`). `wall_s` is the shared pretraining
    time split evenly over all K x budgets results plus the result's own probes and fine-tuning.
    """
    from scaling.data.tokens import load_pretrain_data

    check_stackable(configs)
    cfg = configs[0]
    plan = plan_cooldowns(cfg, budgets)
    device = resolve_device(cfg.device)
    data = load_pretrain_data(cfg.corpus, cfg.tokenizer)
    start = time.perf_counter()
    results = pretrain_batched_with_cooldowns(configs, budgets, data.train, data.val, data.tokenizer.vocab_size,
                                              device=device, compile=compile)
    share = (time.perf_counter() - start) / (len(configs) * len(plan.branches))
    out: list[list[dict[str, Any]]] = []
    for c, per_budget in zip(configs, results):
        row = []
        for branch, result in zip(plan.branches, per_budget):
            result.metrics["cooldown_branch"] = True
            row.append(finish_pipeline(c.replace(tokens=branch.tokens, tpp=None), result, data, device, share))
            result.model = None  # done with it: K x budgets models would otherwise pile up
        out.append(row)
    return out
