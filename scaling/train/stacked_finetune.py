"""Fine-tuning and scoring of K models at once: `scaling.train.finetune` for a stack.

Model k gets what it would get alone: its own task data (built with its seed), its own batches,
the task's fixed recipe on a copy of its weights, and the same scores. The K copies train as
one `StackedGPT` with `StackedAdamW` (no weight decay by default, each model's gradient clipped
to norm 1, as `finetune.finetune`), and every score is one stacked forward pass per batch.
Rows of different widths are right-padded with untargeted padding, which causal attention keeps
from the real positions. A model whose fine-tuning diverges is frozen (`StackedAdamW.kill`) and
gets its `TrainingDiverged`; the others go on. Results equal the per-model path up to float
rounding (tests/test_stacked_finetune.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from scaling.core.schedule import lr_multiplier
from scaling.errors import TrainingDiverged
from scaling.train.finetune import (EncodedExamples, RowStats, _trim, encode_examples, ranked_choice_from,
                                    ranked_choice_rows, LM_SCORE_TOKENS)
from scaling.train.phases import phase
from scaling.train.loop import LossReadback, autocast_dtype, check_finite, readback_interval, to_device
from scaling.train.stacked_model import StackedAdamW, StackedGPT

# the per-model recipe's optimizer settings (`finetune.finetune`)
BETAS = (0.9, 0.95)
GRAD_CLIP = 1.0


@dataclass(frozen=True)
class StackedTaskResult:
    """One task's scores for each model of a stack (NaN after a divergence, with its error)."""

    name: str
    before: list[float]
    after: list[float]
    nll_before: list[float]
    nll_after: list[float]
    errors: list[TrainingDiverged | None]
    steps: int


def pad_stack(rows: Sequence[np.ndarray], fill: int, n: int | None = None) -> np.ndarray:
    """(K, n, W) from K arrays (n_k, W_k): each right-padded with `fill` to the widest and the
    longest (`n`, default the most rows)."""
    n = max(len(r) for r in rows) if n is None else n
    width = max((r.shape[1] for r in rows if len(r)), default=1)
    out = np.full((len(rows), n, width), fill, dtype=np.int64)
    for k, r in enumerate(rows):
        out[k, :len(r), :r.shape[1]] = r
    return out


@torch.no_grad()
def stacked_row_stats(model: StackedGPT, data: Sequence[EncodedExamples], pad_id: int,
                      batch_size: int = 64) -> list[RowStats]:
    """`finetune.row_stats` of model k on `data[k]`, for every k, one stacked pass per batch."""
    device = model.device
    dtype = autocast_dtype(device)
    n = max(len(d.inputs) for d in data)
    parts: list[list[RowStats]] = [[] for _ in data]
    for s in range(0, n, batch_size):
        chunks = [_trim(d.inputs[s:s + batch_size], d.targets[s:s + batch_size]) if s < len(d.inputs)
                  else (np.zeros((0, 1), np.int64), np.zeros((0, 1), np.int64)) for d in data]
        rows = max(len(c[0]) for c in chunks)
        x = to_device(pad_stack([c[0] for c in chunks], pad_id, rows), device)
        y = to_device(pad_stack([c[1] for c in chunks], -100, rows), device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model.logits(x)
        stats = RowStats.of(logits, y)
        for k, (inp, _) in enumerate(chunks):
            m = len(inp)
            parts[k].append(RowStats(stats.nll[k, :m], stats.targets[k, :m], stats.hits[k, :m]))
    return [RowStats.concat(p) for p in parts]


def stacked_score_and_nll(model: StackedGPT, tasks: Sequence, tokenizer) -> list[tuple[float, float]]:
    """`finetune.score_and_nll` of model k on `tasks[k]` (all of one kind), for every k."""
    from scaling.data.tasks import LMTask
    from scaling.data.tokens import eval_windows

    ctx = model.context
    if isinstance(tasks[0], LMTask):
        windows = [eval_windows(t.test_tokens, LM_SCORE_TOKENS, ctx) for t in tasks]
        data = [EncodedExamples(w[:, :-1], w[:, 1:]) for w in windows]
        out = []
        for stats in stacked_row_stats(model, data, tokenizer.pad_id, batch_size=32):
            loss = stats.mean_nll()
            out.append((math.exp(-loss), loss))
        return out
    if tasks[0].labels:
        encoded = [ranked_choice_rows(t.test, t.labels, tokenizer, ctx) for t in tasks]
        stats = stacked_row_stats(model, [rows for rows, _ in encoded], tokenizer.pad_id)
        return [ranked_choice_from(s, truth) for s, (_, truth) in zip(stats, encoded)]
    stats = stacked_row_stats(model, [encode_examples(t.test, tokenizer, ctx) for t in tasks], tokenizer.pad_id)
    return [(float(s.hits.mean()), s.mean_nll()) for s in stats]


class _TaskBatches:
    """Model k's fine-tuning batch of each step, as `finetune.finetune` draws it."""

    def __init__(self, tasks: Sequence, seeds: Sequence[int], tokenizer, context: int, batch_size: int):
        from scaling.data.tasks import LMTask
        from scaling.data.tokens import Batches

        self.pad_id, self.seeds, self.batch_size = tokenizer.pad_id, list(seeds), batch_size
        self.lm = isinstance(tasks[0], LMTask)
        if self.lm:
            self.sources = [Batches(t.train_tokens, batch_size, context, s) for t, s in zip(tasks, seeds)]
        else:
            self.sources = [encode_examples(t.train, tokenizer, context) for t in tasks]
        # one task object and one seed for all: every model sees the same batch
        self.shared = len({id(t) for t in tasks}) == 1 and len(set(seeds)) == 1

    def _one(self, k: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        source = self.sources[k]
        if self.lm:
            batch = source.get(step)
            return batch[:, :-1], batch[:, 1:]
        rng = np.random.default_rng((self.seeds[k], step))
        idx = rng.integers(0, len(source.inputs), size=self.batch_size)
        return _trim(source.inputs[idx], source.targets[idx])

    def get(self, step: int, rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(B, W) inputs and targets shared by all models, or (K, B, W) for models `rows`."""
        if self.shared:
            return tuple(np.ascontiguousarray(a) for a in self._one(rows[0], step))  # type: ignore[return-value]
        pairs = [self._one(k, step) for k in rows]
        return pad_stack([p[0] for p in pairs], self.pad_id), pad_stack([p[1] for p in pairs], -100)


def stacked_finetune(base: StackedGPT, rows: Sequence[int], tasks: Sequence, seeds: Sequence[int], tokenizer,
                     ) -> tuple[StackedGPT, list[TrainingDiverged | None]]:
    """Copies of models `rows` of `base`, fine-tuned together with the task's recipe (model j on
    `tasks[j]`, `seeds[j]`, j indexing `rows`); returns them and each one's divergence, if any."""
    recipe = tasks[0].recipe
    device = base.device
    model = base.copy_rows(rows)
    optimizer = StackedAdamW.plain(model, recipe.decay, BETAS, GRAD_CLIP)
    batches = _TaskBatches(tasks, seeds, tokenizer, base.context, recipe.batch_size)
    dtype = autocast_dtype(device)
    errors: list[TrainingDiverged | None] = [None] * model.k
    readback = LossReadback(readback_interval(device))
    phase = f"fine-tuning on {tasks[0].name}"

    def absorb(pairs: list[tuple[int, list[float]]]) -> None:
        for step, values in pairs:
            for j, value in enumerate(values):
                if errors[j] is None:
                    try:
                        check_finite(value, step, base.vocab_size, phase)
                    except TrainingDiverged as exc:
                        errors[j] = exc
                        optimizer.kill(j)

    for step in range(recipe.steps):
        mult = lr_multiplier(step, recipe.steps, "cosine", recipe.warmup_frac, 0.0)
        inp, tgt = batches.get(step, list(range(model.k)))
        x, y = to_device(inp, device), to_device(tgt, device)
        model.grad.zero_()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            losses = model.masked_losses(x, y)
        losses.sum().backward()
        optimizer.step(recipe.lr * mult)
        absorb(readback.add(step, losses))
    absorb(readback.flush())
    return model, errors


def stacked_finetune_and_score(base: StackedGPT, tasks: Sequence, seeds: Sequence[int], tokenizer,
                               alive: Sequence[bool] | None = None) -> StackedTaskResult:
    """`finetune.finetune_and_score` for every model k of `base` on `tasks[k]` with `seeds[k]`;
    models not `alive` (diverged earlier) are skipped and get NaN."""
    k = base.k
    alive = list(alive) if alive is not None else [True] * k
    rows = [i for i in range(k) if alive[i]]
    nan = [math.nan] * k
    before, after, nll_before, nll_after = list(nan), list(nan), list(nan), list(nan)
    errors: list[TrainingDiverged | None] = [None] * k
    if rows:
        with phase("score"):
            for i, (s, nll) in zip(range(k), stacked_score_and_nll(base, tasks, tokenizer)):
                before[i], nll_before[i] = s, nll
        with phase("fine-tune"):
            tuned, tuned_errors = stacked_finetune(base, rows, [tasks[i] for i in rows], [seeds[i] for i in rows],
                                                   tokenizer)
        with phase("score"):
            scored = stacked_score_and_nll(tuned, [tasks[i] for i in rows], tokenizer)
        for j, i in enumerate(rows):
            errors[i] = tuned_errors[j]
            if errors[i] is None:
                after[i], nll_after[i] = scored[j]
    for i in range(k):
        if not alive[i] or errors[i] is not None:
            before[i] = nll_before[i] = math.nan
    return StackedTaskResult(tasks[0].name, before, after, nll_before, nll_after, errors, tasks[0].recipe.steps)
