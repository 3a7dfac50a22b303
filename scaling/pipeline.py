"""One trial end to end: pretrain -> evaluate -> probe -> fine-tune and score each task.

`run_pipeline(RunConfig) -> dict` is the unit of work the study layer schedules; it knows
nothing of Optuna.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from scaling import __version__
from scaling.config import RunConfig
from scaling.train import PretrainResult, pretrain, resolve_device

if TYPE_CHECKING:
    from scaling.data.tokens import PretrainData


def run_pipeline(cfg: RunConfig, progress: bool = False) -> dict[str, Any]:
    """Train, probe and fine-tune one model; return every metric of design.md section 2.

    Raises `TrainingDiverged` when a loss goes non-finite, `DataError`/`ConfigError` on bad
    input. Fixed seeds give identical results on CPU for a fixed thread count.
    """
    from scaling.data.tokens import load_pretrain_data

    start = time.perf_counter()
    device = resolve_device(cfg.device)
    data = load_pretrain_data(cfg.corpus, cfg.tokenizer)
    result = pretrain(cfg, data.train, data.val, data.tokenizer.vocab_size, progress=progress, device=device)
    return evaluate_pretrained(cfg, result, data, device, start)


def evaluate_pretrained(cfg: RunConfig, result: PretrainResult, data: PretrainData, device: torch.device,
                        start: float) -> dict[str, Any]:
    """The rest of a trial after pretraining: probes, then fine-tune and score each task.

    Shared by `run_pipeline` and the batched trainer (`scaling.batched.run_pipeline_batched`);
    `start` is the `time.perf_counter()` the trial's `wall_s` counts from."""
    from scaling.data.tasks import get_task
    from scaling.finetune import finetune_and_score
    from scaling.probes import linear_probe, qk_rank

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
        scores.append(res)
    metrics["ft_score"] = float(np.mean([r.after for r in scores])) if scores else float("nan")
    metrics["ft_gain"] = float(np.mean([r.gain for r in scores])) if scores else float("nan")
    metrics["tasks"] = ",".join(cfg.tasks)
    metrics["corpus"] = data.corpus_name
    metrics["tokenizer"] = cfg.tokenizer
    metrics["version"] = __version__
    metrics["threads"] = torch.get_num_threads()
    metrics["wall_s"] = time.perf_counter() - start
    metrics["curve"] = result.curve
    return metrics
