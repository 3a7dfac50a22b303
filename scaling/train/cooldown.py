"""Several token budgets from one warmup-stable-decay (WSD) run: cooldown branches.

WSD runs of budgets D_1 < D_2 < ... agree step for step until each one's cooldown starts
(Hagele et al. 2024, sec. 3-4), so one stable run per config serves them all: at each budget's
cooldown start the run is copied (`StackedRun.clone`) and the copy is trained on by the same
loop (`scaling.train.loop.train_steps`) with that budget's own lr function. A branch equals its
full run (bit-identical on CPU) when its own warmup rounds to the shared one, always with
warmup_frac = 0 (`schedule_exact`); larger budgets otherwise get a shorter warmup.
`compare_with_full_runs` measures the difference (docs/performance.md has the numbers).

Each branch's metrics are those of a run with `tokens = D_b`, plus `branch_step`,
`warmup_steps` (the shared warmup), `schedule_exact`, `cooldown_s` (its own cooldown's training
time) and `train_s` = the shared stable time up to the branch plus `cooldown_s`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from scaling.config import RunConfig, model_shape, token_budget
from scaling.core.budget import cooldown_steps, warmup_steps
from scaling.core.schedule import wsd_multiplier
from scaling.core.shapes import non_embedding_params
from scaling.errors import ConfigError
from scaling.train.loop import PretrainResult, curve_windows, resolve_device, train_steps
from scaling.train.stacked import StackedRun, check_stackable, pretrain_batched


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
        cooldown = cooldown_steps(steps, cfg.cooldown_frac)
        branches[steps] = Branch(n_tokens, steps, cooldown, warmup_steps(steps, cfg.warmup_frac))
    ordered = tuple(branches[s] for s in sorted(branches))
    return CooldownPlan(warmup=ordered[0].own_warmup, branches=ordered)


def pretrain_batched_with_cooldowns(configs: Sequence[RunConfig], budgets: Sequence[int], train_tokens: np.ndarray,
                                    val_tokens: np.ndarray, vocab_size: int, device: torch.device | None = None,
                                    compile: bool = False) -> list[list[PretrainResult]]:
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
    curve_val = curve_windows(val_windows)
    every = {b.steps: cfg.eval_every or max(1, b.steps // 10) for b in plan.branches}

    def shared_lr(step: int) -> float:
        return cfg.lr * wsd_multiplier(step, plan.stable_steps + 1, plan.warmup, 0, cfg.final_lr_frac)

    def on_a_grid(done: int) -> bool:
        """A point of some branch's own curve grid that lies on the shared stretch."""
        return any(done % every[b.steps] == 0 and done <= b.start for b in plan.branches)

    results: dict[int, list[PretrainResult]] = {}
    stable_time, step = 0.0, 0
    for index, branch in enumerate(plan.branches):
        stable_time += train_steps(run, step, branch.start, shared_lr, on_a_grid, curve_val)
        step = branch.start
        last = index == len(plan.branches) - 1
        branch_run = run if last else run.clone()
        results[branch.steps] = _cool_down(branch_run, branch, plan, configs, stable_time, every[branch.steps],
                                           curve_val, val_windows)
    return [[results[b.steps][k] for b in plan.branches] for k in range(len(configs))]


def _cool_down(run: StackedRun, branch: Branch, plan: CooldownPlan, configs: Sequence[RunConfig],
               stable_time: float, eval_every: int, curve_val: np.ndarray,
               val_windows: np.ndarray) -> list[PretrainResult]:
    """The branch's cooldown: the training loop from `branch.start` with the branch's own lr."""
    cfg = configs[0]
    # the shared curve has the points of every budget's grid; keep this budget's own (their
    # train_loss averages the steps since the previous shared point: curves are informational)
    run.curves = [[p for p in curve if p["step"] % eval_every == 0] for curve in run.curves]

    def lr_at(step: int) -> float:
        return cfg.lr * wsd_multiplier(step, branch.steps, plan.warmup, branch.cooldown, cfg.final_lr_frac)

    cooldown_time = train_steps(run, branch.start, branch.steps, lr_at,
                                lambda done: done % eval_every == 0 or done == branch.steps, curve_val)
    budget_configs = [c.replace(tokens=branch.tokens, tpp=None) for c in configs]
    extra = {"branch_step": branch.start, "warmup_steps": plan.warmup, "schedule_exact": plan.exact(branch),
             "cooldown_s": cooldown_time}
    return run.results(budget_configs, branch.steps, branch.tokens, stable_time + cooldown_time, val_windows,
                       extra=extra)


def pretrain_with_cooldowns(cfg: RunConfig, budgets: Sequence[int], train_tokens: np.ndarray, val_tokens: np.ndarray,
                            vocab_size: int, device: torch.device | None = None,
                            compile: bool = False) -> list[PretrainResult]:
    """One model at every budget in `budgets` (tokens) from one shared stable phase; one result
    per budget, ascending. Exact where `CooldownPlan.exact` holds (see the module docstring)."""
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
