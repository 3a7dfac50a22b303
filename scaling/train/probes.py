"""Mechanism probes (Han et al. 2026): how linearly separable the hidden states are, and how
low-rank the attention query-key products are.

- `probe_acc`: a multinomial logistic regression on frozen, mean-pooled final hidden states of
  held-out passages, predicting the passage's source; trained on passages from some held-out
  documents and scored on passages from others.
- `qk_rank`: the entropy-based effective rank (Roy & Vetterli 2007: exp of the Shannon entropy
  of the normalised singular values) of each head's bilinear form W_Q,h^T W_K,h, averaged over
  heads and layers.
"""

from __future__ import annotations

import numpy as np
import torch

from scaling.train.model import GPT


def effective_rank(matrix: torch.Tensor) -> float:
    s = torch.linalg.svdvals(matrix.double())
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def qk_rank(model: GPT) -> float:
    ranks = []
    for block in model.blocks:
        h = block.attn.n_heads
        wq = block.attn.wq.weight.detach().cpu().view(h, -1, model.shape.d_model)
        wk = block.attn.wk.weight.detach().cpu().view(h, -1, model.shape.d_model)
        for i in range(h):
            ranks.append(effective_rank(wq[i].T @ wk[i]))
    return float(np.mean(ranks))


@torch.no_grad()
def pooled_features(model: GPT, texts: list[str], tokenizer, device: torch.device, batch_size: int = 64) -> np.ndarray:
    """Mean over positions of the final normalised hidden states (padding excluded)."""
    model.eval()
    feats = []
    for s in range(0, len(texts), batch_size):
        rows = [list(tokenizer.encode(t))[: model.context] or [tokenizer.eos_id] for t in texts[s:s + batch_size]]
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), tokenizer.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.float32)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = 1.0
        hidden = model.hidden_states(torch.from_numpy(ids).to(device)).float()
        m = torch.from_numpy(mask).to(device).unsqueeze(-1)
        feats.append(((hidden * m).sum(1) / m.sum(1)).cpu().numpy())
    return np.concatenate(feats)


def logistic_probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                            l2: float = 1e-3, iters: int = 200) -> float:
    """Fit a multinomial logistic regression (standardised features, L2 penalty, full-batch
    L-BFGS) and return test accuracy."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x = torch.from_numpy((train_x - mean) / std).double()
    xt = torch.from_numpy((test_x - mean) / std).double()
    classes = np.unique(np.concatenate([train_y, test_y]))
    y = torch.from_numpy(np.searchsorted(classes, train_y))
    yt = np.searchsorted(classes, test_y)
    w = torch.zeros(x.shape[1], len(classes), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        pred = (xt @ w + b).argmax(1).numpy()
    return float(np.mean(pred == yt))


def linear_probe(model: GPT, heldout_docs, tokenizer, device: torch.device, seed: int = 0,
                 n_train: int = 600) -> float:
    """Probe accuracy on the `source` task's passages (balanced classes, train and test from
    disjoint held-out documents), features taken from the passage alone (no prompt suffix)."""
    from scaling.data.tasks import source_task

    task = source_task(tokenizer, heldout_docs, seed=seed)
    strip = len(source_prompt_suffix())
    train = task.train[:n_train]
    tx = pooled_features(model, [p[:-strip] for p, _ in train], tokenizer, device)
    vx = pooled_features(model, [p[:-strip] for p, _ in task.test], tokenizer, device)
    return logistic_probe_accuracy(tx, np.array([c for _, c in train]), vx, np.array([c for _, c in task.test]))


def source_prompt_suffix() -> str:
    from scaling.data.tasks import source_prompt

    return source_prompt("")
