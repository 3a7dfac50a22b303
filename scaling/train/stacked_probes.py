"""The mechanism probes of `scaling.train.probes` for K models at once.

`stacked_qk_rank`: every head's W_Q,h^T W_K,h of every model in one batched SVD.
`stacked_linear_probe`: each model's pooled features from one stacked forward pass per batch,
then its own logistic regression (`probes.logistic_probe_accuracy`), as alone. Results equal
the per-model probes up to float rounding (tests/test_stacked_finetune.py).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from scaling.train.model import GPT
from scaling.train.probes import logistic_probe_accuracy, source_prompt_suffix
from scaling.train.stacked_model import StackedGPT
from scaling.train.stacked_finetune import pad_stack


@torch.no_grad()
def stacked_qk_rank(models: Sequence[GPT]) -> list[float]:
    """`probes.qk_rank` of each model: entropy effective rank of every head's W_Q,h^T W_K,h,
    averaged over heads and layers."""
    if not models:
        return []
    d = models[0].shape.d_model
    products = []
    for model in models:
        for block in model.blocks:
            h = block.attn.n_heads
            wq = block.attn.wq.weight.detach().cpu().double().view(h, -1, d)
            wk = block.attn.wk.weight.detach().cpu().double().view(h, -1, d)
            products.append(wq.transpose(1, 2) @ wk)  # (h, d, d)
    s = torch.linalg.svdvals(torch.cat(products))  # (K * L * h, d)
    p = s / s.sum(dim=1, keepdim=True)
    entropy = -torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(dim=1)
    ranks = torch.where(s.sum(dim=1) > 0, entropy.exp(), torch.zeros_like(entropy))
    return [float(r) for r in ranks.view(len(models), -1).mean(dim=1)]


@torch.no_grad()
def stacked_pooled_features(model: StackedGPT, texts: Sequence[Sequence[str]], tokenizer,
                            batch_size: int = 64) -> list[np.ndarray]:
    """`probes.pooled_features` of model k on `texts[k]` (all of one length), for every k."""
    n = len(texts[0])
    feats: list[list[np.ndarray]] = [[] for _ in texts]
    for s in range(0, n, batch_size):
        rows = [[list(tokenizer.encode(t))[: model.context] or [tokenizer.eos_id] for t in ts[s:s + batch_size]]
                for ts in texts]
        ids = pad_stack([_ragged(r, tokenizer.pad_id) for r in rows], tokenizer.pad_id)
        lengths = torch.tensor([[len(x) for x in r] for r in rows])  # (K, B)
        mask = (torch.arange(ids.shape[2]).view(1, 1, -1) < lengths.unsqueeze(2)).float().to(model.device)
        hidden = model.hidden_states(torch.from_numpy(ids).to(model.device)).float()
        m = mask.unsqueeze(-1)
        pooled = ((hidden * m).sum(2) / m.sum(2)).cpu().numpy()
        for k in range(len(texts)):
            feats[k].append(pooled[k])
    return [np.concatenate(f) for f in feats]


def _ragged(rows: list[list[int]], pad_id: int) -> np.ndarray:
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), pad_id, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def stacked_linear_probe(model: StackedGPT, heldout_docs, tokenizer, seeds: Sequence[int],
                         n_train: int = 600) -> list[float]:
    """`probes.linear_probe` of model k with seed `seeds[k]`, for every k."""
    from scaling.data.tasks import source_task

    strip = len(source_prompt_suffix())
    tasks = {seed: source_task(tokenizer, heldout_docs, seed=seed) for seed in dict.fromkeys(seeds)}
    train = [tasks[s].train[:n_train] for s in seeds]
    test = [tasks[s].test for s in seeds]
    tx = stacked_pooled_features(model, [[p[:-strip] for p, _ in rows] for rows in train], tokenizer)
    vx = stacked_pooled_features(model, [[p[:-strip] for p, _ in rows] for rows in test], tokenizer)
    return [logistic_probe_accuracy(tx[k], np.array([c for _, c in train[k]]), vx[k],
                                    np.array([c for _, c in test[k]])) for k in range(len(seeds))]
