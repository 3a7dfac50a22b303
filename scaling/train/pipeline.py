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
from scaling.errors import ConfigError, TrainingDiverged
from scaling.train.loop import PretrainResult, divergence_fields, resolve_device
from scaling.train.phases import phase

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
    with phase("pretrain"):
        pretrained = pretrain_stage(data, device)
    share = (time.perf_counter() - start) / len(pretrained)
    if len(pretrained) > 1:
        metrics = finish_stack(pretrained, data, device, share)
    else:
        metrics = [finish_pipeline(c, result, data, device, share) for c, result in pretrained]
    for _, result in pretrained:
        result.model = None  # done with it: K x budgets models would otherwise pile up
    return [(result, m) for (_, result), m in zip(pretrained, metrics)]


def task_key(name: str) -> str:
    """A task's name as it appears in metric keys (`ft_<key>_before`)."""
    return name.replace(":", "_").replace("/", "_").replace(".", "_")


def task_metrics(names: Sequence[str], results: Sequence[Any]) -> dict[str, float]:
    """ft_<task>_before/after, ft_<task>_nll_before/after, ft_score, ft_gain, ft_nll, ft_nll_gain
    from one model's `TaskResult`s (or anything with before/after/nll_before/nll_after)."""
    out: dict[str, float] = {}
    for name, r in zip(names, results):
        key = task_key(name)
        out[f"ft_{key}_before"] = r.before
        out[f"ft_{key}_after"] = r.after
        out[f"ft_{key}_nll_before"] = r.nll_before
        out[f"ft_{key}_nll_after"] = r.nll_after

    def mean(values: list[float]) -> float:
        return float(np.mean(values)) if values else float("nan")

    out["ft_score"] = mean([r.after for r in results])
    out["ft_gain"] = mean([r.after - r.before for r in results])
    out["ft_nll"] = mean([r.nll_after for r in results])
    out["ft_nll_gain"] = mean([r.nll_before - r.nll_after for r in results])
    return out


def _provenance(cfg: RunConfig, data: PretrainData) -> dict[str, Any]:
    return {"tasks": ",".join(cfg.tasks), "corpus": data.corpus_name, "tokenizer": cfg.tokenizer,
            "version": __version__, "threads": torch.get_num_threads()}


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

    with phase("probes"):
        metrics["qk_rank"] = qk_rank(model)
        metrics["probe_acc"] = (linear_probe(model, data.heldout_docs, data.tokenizer, device, seed=cfg.seed)
                                if cfg.probes else float("nan"))

    scores = []
    for name in cfg.tasks:
        task = get_task(name, data.tokenizer, data.heldout_docs, seed=cfg.seed)
        scores.append(finetune_and_score(model, task, data.tokenizer, device, seed=cfg.seed))
    metrics.update(task_metrics(cfg.tasks, scores))
    metrics.update(_provenance(cfg, data))
    metrics["wall_s"] = time.perf_counter() - start
    metrics["curve"] = result.curve
    return metrics


def finish_stack(pretrained: Sequence[tuple[RunConfig, PretrainResult]], data: PretrainData, device: torch.device,
                 pretrain_share: float) -> list[dict[str, Any]]:
    """`finish_pipeline` for K pretrained models of one shape at once (a stack of one cell's
    decays and seeds, or cooldown branches): probes, fine-tuning and scoring run stacked
    (`scaling.train.stacked_probes`, `scaling.train.stacked_finetune`) and give the metrics the
    per-model path gives, up to float rounding. The configs must share their tasks and `probes`.
    `wall_s` counts `pretrain_share` plus an even share of the stacked time; `finish_models` is
    the number of models finished together."""
    from scaling.data.tasks import get_task
    from scaling.train.stacked_finetune import stacked_finetune_and_score
    from scaling.train.stacked_model import StackedGPT
    from scaling.train.stacked_probes import stacked_linear_probe, stacked_qk_rank

    configs = [c for c, _ in pretrained]
    if len({(tuple(c.tasks), c.probes) for c in configs}) > 1:
        raise ConfigError("finish_stack: configs: expected one set of tasks and one probes setting for all models")
    start = time.perf_counter()
    live = [i for i, (_, r) in enumerate(pretrained) if r.error is None]
    seeds = [configs[i].seed for i in live]
    extra: dict[int, dict[str, Any]] = {i: {} for i in live}
    errors: dict[int, TrainingDiverged] = {}
    if live:
        models = [pretrained[i][1].model for i in live]
        base = StackedGPT.from_models(models, device)
        with phase("probes"):
            for i, rank in zip(live, stacked_qk_rank(models)):
                extra[i]["qk_rank"] = rank
            probe = (stacked_linear_probe(base, data.heldout_docs, data.tokenizer, seeds) if configs[0].probes
                     else [float("nan")] * len(live))
        for i, acc in zip(live, probe):
            extra[i]["probe_acc"] = acc
        per_task = []
        cache: dict[tuple[str, int], Any] = {}
        for name in configs[0].tasks:
            for s in seeds:  # one task per seed: every model with that seed shares its data
                if (name, s) not in cache:
                    cache[(name, s)] = get_task(name, data.tokenizer, data.heldout_docs, seed=s)
            tasks = [cache[(name, s)] for s in seeds]
            alive = [live[j] not in errors for j in range(len(live))]
            res = stacked_finetune_and_score(base, tasks, seeds, data.tokenizer, alive)
            for j, error in enumerate(res.errors):
                if error is not None:
                    errors[live[j]] = error
            per_task.append(res)
        for j, i in enumerate(live):
            if i not in errors:
                extra[i].update(task_metrics(configs[0].tasks, [_Scores(r, j) for r in per_task]))
        del base
    share = (time.perf_counter() - start) / len(pretrained)
    out = []
    for i, (cfg, result) in enumerate(pretrained):
        if i in errors:
            result.error = errors[i]
            result.metrics.update(divergence_fields(errors[i]))
        metrics = dict(result.metrics)
        if result.error is None:
            metrics.update(extra[i])
            metrics.update(_provenance(cfg, data))
            metrics["finish_models"] = len(pretrained)
        metrics["wall_s"] = pretrain_share + share
        metrics["curve"] = result.curve
        out.append(metrics)
    return out


class _Scores:
    """Model j's scores in a `StackedTaskResult`, shaped like a `TaskResult` for `task_metrics`."""

    def __init__(self, result: Any, j: int):
        self.before, self.after = result.before[j], result.after[j]
        self.nll_before, self.nll_after = result.nll_before[j], result.nll_after[j]
