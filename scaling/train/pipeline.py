"""The unit of work of a study: pretrain -> probes -> fine-tune and score each task.

One pipeline for one model (`run_pipeline`), K stacked models (`run_pipeline_batched`) and K
models at several budgets from cooldown branches (`run_pipeline_with_cooldowns`): each pretrains
its way, then `finish_pipeline` probes, fine-tunes and scores every pretrained model. Knows
nothing of Optuna.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from scaling import __version__
from scaling.config import RunConfig
from scaling.errors import TrainingDiverged
from scaling.train.loop import PretrainResult, divergence_fields, resolve_device

if TYPE_CHECKING:
    from scaling.data.tokens import PretrainData

# pretraining stage of a pipeline: (data, device) -> [(config of the result, result), ...]
Pretrainer = Callable[["PretrainData", torch.device], list[tuple[RunConfig, PretrainResult]]]


def run_pipeline(cfg: RunConfig, progress: bool = False) -> dict[str, Any]:
    """Train, probe and fine-tune one model; return every metric of design.md section 2.

    Raises `TrainingDiverged` when a loss goes non-finite, `DataError`/`ConfigError` on bad
    input. Fixed seeds give identical results on CPU for a fixed thread count.
    """
    from scaling.train.single import pretrain_single

    def stage(data: PretrainData, device: torch.device) -> list[tuple[RunConfig, PretrainResult]]:
        return [(cfg, pretrain_single(cfg, data.train, data.val, data.tokenizer.vocab_size, progress, device))]

    (result, metrics), = _pipeline(cfg, stage)
    if result.error is not None:
        raise result.error
    return metrics


def run_pipeline_batched(configs: Sequence[RunConfig], progress: bool = False,
                         compile: bool = False) -> list[dict[str, Any]]:
    """`run_pipeline` for K configs that differ only in decay and seed, pretrained as one stacked
    model. Returns one metrics dict per config, in order; a model that diverged does not raise
    (see `finish_pipeline`)."""
    from scaling.train.stacked import check_stackable, pretrain_batched

    check_stackable(configs)

    def stage(data: PretrainData, device: torch.device) -> list[tuple[RunConfig, PretrainResult]]:
        results = pretrain_batched(configs, data.train, data.val, data.tokenizer.vocab_size, progress=progress,
                                   device=device, compile=compile)
        return list(zip(configs, results))

    return [metrics for _, metrics in _pipeline(configs[0], stage)]


def run_pipeline_with_cooldowns(configs: Sequence[RunConfig], budgets: Sequence[int],
                                compile: bool = False) -> list[list[dict[str, Any]]]:
    """`run_pipeline` for K configs at every budget in `budgets` (tokens), from one shared stable
    phase with a cooldown branch per budget (`scaling.train.cooldown`).

    Returns metrics[config][budget], budgets ascending (as `plan_cooldowns` orders them); each
    dict is that of a run of `tokens` = the budget, plus the branch's `branch_step`,
    `warmup_steps`, `schedule_exact`, `cooldown_s`, and `cooldown_branch` = True. A model that
    diverged does not raise (see `finish_pipeline`).
    """
    from scaling.train.cooldown import plan_cooldowns, pretrain_batched_with_cooldowns
    from scaling.train.stacked import check_stackable

    check_stackable(configs)
    plan = plan_cooldowns(configs[0], budgets)

    def stage(data: PretrainData, device: torch.device) -> list[tuple[RunConfig, PretrainResult]]:
        results = pretrain_batched_with_cooldowns(configs, budgets, data.train, data.val,
                                                  data.tokenizer.vocab_size, device=device, compile=compile)
        out = []
        for c, per_budget in zip(configs, results):
            for branch, result in zip(plan.branches, per_budget):
                result.metrics["cooldown_branch"] = True
                out.append((c.replace(tokens=branch.tokens, tpp=None), result))
        return out

    flat = [metrics for _, metrics in _pipeline(configs[0], stage)]
    n = len(plan.branches)
    return [flat[i * n:(i + 1) * n] for i in range(len(configs))]


def _pipeline(cfg: RunConfig, pretrain_stage: Pretrainer) -> list[tuple[PretrainResult, dict[str, Any]]]:
    """Load the data, pretrain, then finish every result; the pretraining time is shared evenly."""
    from scaling.data.tokens import load_pretrain_data

    device = resolve_device(cfg.device)
    data = load_pretrain_data(cfg.corpus, cfg.tokenizer)
    start = time.perf_counter()
    pretrained = pretrain_stage(data, device)
    share = (time.perf_counter() - start) / len(pretrained)
    out = []
    for c, result in pretrained:
        out.append((result, finish_pipeline(c, result, data, device, share)))
        result.model = None  # done with it: K x budgets models would otherwise pile up
    return out


def finish_pipeline(cfg: RunConfig, result: PretrainResult, data: PretrainData, device: torch.device,
                    pretrain_share: float) -> dict[str, Any]:
    """The rest of a trial after pretraining: probes, then fine-tune and score each task.

    A model that diverged in pretraining, or diverges in fine-tuning (`result.error` is then
    set), gets its pretraining metrics with `error`, `diverged_step`, `diverged_phase` and
    `curve` instead. `wall_s` counts `pretrain_share` (this model's part of the pretraining
    time) plus its own time here."""
    own_start = time.perf_counter() - pretrain_share
    if result.error is None:
        try:
            return _probe_and_finetune(cfg, result, data, device, own_start)
        except TrainingDiverged as exc:
            result.error = exc
            result.metrics.update(divergence_fields(exc))
    metrics = dict(result.metrics)
    metrics["wall_s"] = time.perf_counter() - own_start
    metrics["curve"] = result.curve
    return metrics


def _probe_and_finetune(cfg: RunConfig, result: PretrainResult, data: PretrainData, device: torch.device,
                        start: float) -> dict[str, Any]:
    from scaling.data.tasks import get_task
    from scaling.train.finetune import finetune_and_score
    from scaling.train.probes import linear_probe, qk_rank

    metrics = dict(result.metrics)
    model = result.model

    metrics["qk_rank"] = qk_rank(model)
    metrics["probe_acc"] = (
        linear_probe(model, data.heldout_docs, data.tokenizer, device, seed=cfg.seed) if cfg.probes else float("nan")
    )

    scores = []
    for name in cfg.tasks:
        task = get_task(name, data.tokenizer, data.heldout_docs, seed=cfg.seed)
        res = finetune_and_score(model, task, data.tokenizer, device, seed=cfg.seed)
        key = name.replace(":", "_").replace("/", "_").replace(".", "_")
        metrics[f"ft_{key}_before"] = res.before
        metrics[f"ft_{key}_after"] = res.after
        metrics[f"ft_{key}_nll_before"] = res.nll_before
        metrics[f"ft_{key}_nll_after"] = res.nll_after
        scores.append(res)
    metrics["ft_score"] = float(np.mean([r.after for r in scores])) if scores else float("nan")
    metrics["ft_gain"] = float(np.mean([r.gain for r in scores])) if scores else float("nan")
    metrics["ft_nll"] = float(np.mean([r.nll_after for r in scores])) if scores else float("nan")
    metrics["ft_nll_gain"] = float(np.mean([r.nll_before - r.nll_after for r in scores])) if scores else float("nan")
    metrics["tasks"] = ",".join(cfg.tasks)
    metrics["corpus"] = data.corpus_name
    metrics["tokenizer"] = cfg.tokenizer
    metrics["version"] = __version__
    metrics["threads"] = torch.get_num_threads()
    metrics["wall_s"] = time.perf_counter() - start
    metrics["curve"] = result.curve
    return metrics
