"""Fixed-recipe fine-tuning and task scoring: the plasticity half of a trial.

Every base model gets the same recipe per task (steps, LR, batch, no weight decay by
default), applied to a fresh copy of its weights, and is scored before and after.

Scores, each in [0, 1], higher is better:
- LM tasks (`code`, user `{"text"}`): exp(-mean held-out loss in nats/token), i.e. the geometric
  mean probability of the next token (1 / perplexity).
- prompt -> completion tasks without labels (`arithmetic`, user JSONL): exact match under
  greedy decoding. Computed in one teacher-forced pass: greedy decoding reproduces the
  completion (followed by end-of-text) exactly when the argmax at every completion position
  equals the completion's token, since each greedy prefix is then the teacher-forced one.
- classification tasks (`source`): accuracy of the label with the highest likelihood given the
  prompt (ranked choice among the task's labels, as multiple-choice evaluations do), so the score
  before fine-tuning is meaningful rather than zero.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from scaling.core.schedule import lr_multiplier
from scaling.errors import DataError
from scaling.train.loop import autocast_dtype, check_finite, to_device
from scaling.train.model import GPT
from scaling.train.phases import phase
from scaling.train.single import evaluate_loss


@dataclass(frozen=True)
class TaskResult:
    name: str
    before: float
    after: float
    steps: int
    wall_s: float
    nll_before: float = math.nan  # mean NLL, nats per target token, on the held-out split
    nll_after: float = math.nan

    @property
    def gain(self) -> float:
        return self.after - self.before


@dataclass(frozen=True)
class EncodedExamples:
    """Right-padded token rows with next-token targets; -100 marks positions not scored."""

    inputs: np.ndarray  # (n, T) int64
    targets: np.ndarray  # (n, T) int64


def encode_examples(pairs: list[tuple[str, str]], tokenizer, context: int) -> EncodedExamples:
    """prompt + completion + eos, truncated from the left to fit `context`; only completion and
    eos positions are targets."""
    rows, tgts = [], []
    for prompt, completion in pairs:
        p = list(tokenizer.encode(prompt))
        c = list(tokenizer.encode(completion)) + [tokenizer.eos_id]
        if len(c) > context:
            raise DataError(f"task completion of {len(c)} tokens does not fit the context of {context}")
        seq = (p + c)[-(context + 1):]
        n_prompt = len(seq) - len(c)
        inp, tgt = seq[:-1], seq[1:]
        tgt = [-100 if j + 1 < n_prompt else t for j, t in enumerate(tgt)]
        rows.append(inp)
        tgts.append(tgt)
    width = max(len(r) for r in rows)
    inputs = np.full((len(rows), width), tokenizer.pad_id, dtype=np.int64)
    targets = np.full((len(rows), width), -100, dtype=np.int64)
    for i, (r, t) in enumerate(zip(rows, tgts)):
        inputs[i, : len(r)] = r
        targets[i, : len(t)] = t
    return EncodedExamples(inputs, targets)


def _trim(inputs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop columns that are padding in every row of a batch."""
    used = np.nonzero((targets != -100).any(axis=0))[0]
    width = int(used[-1]) + 1 if len(used) else 1
    return inputs[:, :width], targets[:, :width]


@torch.no_grad()
def _scored_batches(model: GPT, data: EncodedExamples, device: torch.device, batch_size: int = 64):
    """Yield (logits, targets) for consecutive batches of encoded rows, in eval mode."""
    model.eval()
    dtype = autocast_dtype(device)
    for s in range(0, len(data.inputs), batch_size):
        inp, tgt = _trim(data.inputs[s:s + batch_size], data.targets[s:s + batch_size])
        x = torch.from_numpy(inp).to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits, _ = model(x)
        yield logits, torch.from_numpy(tgt).to(device)


@dataclass(frozen=True)
class RowStats:
    """Per encoded row: summed NLL of its targets, their number, and whether the argmax hits
    every target (what greedy decoding needs to reproduce the completion)."""

    nll: np.ndarray  # (n,) float64
    targets: np.ndarray  # (n,) int64
    hits: np.ndarray  # (n,) bool

    @classmethod
    def of(cls, logits: torch.Tensor, y: torch.Tensor) -> "RowStats":
        """Stats of rows (..., T) from their logits (..., T, V) and targets (-100: not scored)."""
        logp = torch.log_softmax(logits.float(), dim=-1)
        mask = y != -100
        picked = logp.gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        hits = ((logits.argmax(-1) == y) | ~mask).all(dim=-1)
        return cls((-(picked * mask).sum(dim=-1)).double().cpu().numpy(), mask.sum(dim=-1).cpu().numpy(),
                   hits.cpu().numpy())

    @classmethod
    def concat(cls, parts: list["RowStats"]) -> "RowStats":
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("nll", "targets", "hits")))

    def mean_nll(self, rows: np.ndarray | slice = slice(None)) -> float:
        """Mean NLL per target token over `rows`."""
        return float(self.nll[rows].sum() / max(1, int(self.targets[rows].sum())))


def row_stats(model: GPT, data: EncodedExamples, device: torch.device, batch_size: int = 64) -> RowStats:
    return RowStats.concat([RowStats.of(logits, y) for logits, y in _scored_batches(model, data, device, batch_size)])


def exact_match(model: GPT, data: EncodedExamples, device: torch.device, batch_size: int = 64) -> float:
    return float(row_stats(model, data, device, batch_size).hits.mean())


def sequence_nll(model: GPT, data: EncodedExamples, device: torch.device, batch_size: int = 64) -> np.ndarray:
    """Summed NLL of each row's target tokens."""
    return row_stats(model, data, device, batch_size).nll


def ranked_choice_rows(test: list[tuple[str, str]], labels: tuple[str, ...], tokenizer, context: int,
                       ) -> tuple[EncodedExamples, np.ndarray]:
    """Every (prompt, label) candidate encoded, prompt-major, and the index of each prompt's true label."""
    candidates = [(prompt, label) for prompt, _ in test for label in labels]
    truth = np.asarray([labels.index(c) for _, c in test])
    return encode_examples(candidates, tokenizer, context), truth


def ranked_choice_from(stats: RowStats, truth: np.ndarray) -> tuple[float, float]:
    """(accuracy of the label with the lowest summed NLL, mean NLL of the true completions)."""
    n_labels = len(stats.nll) // len(truth)
    chosen = stats.nll.reshape(len(truth), n_labels).argmin(axis=1)
    true_rows = np.arange(len(truth)) * n_labels + truth
    return float(np.mean(chosen == truth)), stats.mean_nll(true_rows)


def ranked_choice_accuracy(model: GPT, test: list[tuple[str, str]], labels: tuple[str, ...], tokenizer,
                           context: int, device: torch.device) -> float:
    """Accuracy of picking, for each prompt, the label with the lowest summed NLL."""
    rows, truth = ranked_choice_rows(test, labels, tokenizer, context)
    return ranked_choice_from(row_stats(model, rows, device), truth)[0]


LM_SCORE_TOKENS = 65536


def lm_loss(model: GPT, test_tokens: np.ndarray, context: int, device: torch.device,
            max_tokens: int = LM_SCORE_TOKENS) -> float:
    """Mean held-out loss (nats/token) of an LM task; its score is exp(-loss)."""
    from scaling.data.tokens import eval_windows

    return evaluate_loss(model, eval_windows(test_tokens, max_tokens, context), device)


def lm_score(model: GPT, test_tokens: np.ndarray, context: int, device: torch.device,
             max_tokens: int = LM_SCORE_TOKENS) -> float:
    return math.exp(-lm_loss(model, test_tokens, context, device, max_tokens))


def score_and_nll(model: GPT, task, tokenizer, device: torch.device) -> tuple[float, float]:
    """The task's score and the mean NLL per target token of its held-out split, in one pass."""
    from scaling.data.tasks import LMTask

    if isinstance(task, LMTask):
        loss = lm_loss(model, task.test_tokens, model.context, device)
        return math.exp(-loss), loss
    if task.labels:
        return ranked_choice_and_nll(model, task.test, task.labels, tokenizer, model.context, device)
    return exact_match_and_nll(model, encode_examples(task.test, tokenizer, model.context), device)


def exact_match_and_nll(model: GPT, data: EncodedExamples, device: torch.device,
                        batch_size: int = 64) -> tuple[float, float]:
    """Exact match and mean NLL per target token, from the same teacher-forced pass."""
    stats = row_stats(model, data, device, batch_size)
    return float(stats.hits.mean()), stats.mean_nll()


def ranked_choice_and_nll(model: GPT, test: list[tuple[str, str]], labels: tuple[str, ...], tokenizer,
                          context: int, device: torch.device) -> tuple[float, float]:
    """Ranked-choice accuracy and the mean NLL per target token of the true labels, from one pass."""
    rows, truth = ranked_choice_rows(test, labels, tokenizer, context)
    return ranked_choice_from(row_stats(model, rows, device), truth)


def score(model: GPT, task, tokenizer, device: torch.device) -> float:
    return score_and_nll(model, task, tokenizer, device)[0]


def finetune(model: GPT, task, tokenizer, device: torch.device, seed: int = 0) -> int:
    """Train `model` in place with the task's fixed recipe; returns the number of steps."""
    from scaling.data.tasks import LMTask
    from scaling.data.tokens import Batches

    recipe = task.recipe
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(0.9, 0.95),
                                  weight_decay=recipe.decay)
    dtype = autocast_dtype(device)
    if isinstance(task, LMTask):
        batches = Batches(task.train_tokens, recipe.batch_size, model.context, seed)
        encoded = None
    else:
        encoded = encode_examples(task.train, tokenizer, model.context)
    model.train()
    for step in range(recipe.steps):
        mult = lr_multiplier(step, recipe.steps, "cosine", recipe.warmup_frac, 0.0)
        for group in optimizer.param_groups:
            group["lr"] = recipe.lr * mult
        if encoded is None:
            batch = batches.get(step)
            inp, tgt = batch[:, :-1], batch[:, 1:]
        else:
            rng = np.random.default_rng((seed, step))
            idx = rng.integers(0, len(encoded.inputs), size=recipe.batch_size)
            inp, tgt = _trim(encoded.inputs[idx], encoded.targets[idx])
        x, y = to_device(inp, device), to_device(tgt, device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        check_finite(loss.item(), step, model.vocab_size, f"fine-tuning on {task.name}")
    model.eval()
    return recipe.steps


def finetune_and_score(base: GPT, task, tokenizer, device: torch.device, seed: int = 0) -> TaskResult:
    """Score the base model, fine-tune a copy with the task's recipe, score the copy."""
    start = time.perf_counter()
    with phase("score"):
        before, nll_before = score_and_nll(base, task, tokenizer, device)
    with phase("fine-tune"):
        model = copy.deepcopy(base)
        steps = finetune(model, task, tokenizer, device, seed)
    with phase("score"):
        after, nll_after = score_and_nll(model, task, tokenizer, device)
    return TaskResult(task.name, before, after, steps, time.perf_counter() - start, nll_before, nll_after)
