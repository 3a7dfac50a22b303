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
from scaling.train.loop import autocast_dtype, check_finite
from scaling.train.model import GPT
from scaling.train.single import evaluate_loss


@dataclass(frozen=True)
class TaskResult:
    name: str
    before: float
    after: float
    steps: int
    wall_s: float
    nll_before: float = math.nan  # mean held-out NLL, nats per target token
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


def exact_match(model: GPT, data: EncodedExamples, device: torch.device, batch_size: int = 64) -> float:
    hits = 0
    for logits, y in _scored_batches(model, data, device, batch_size):
        ok = (logits.argmax(-1) == y) | (y == -100)
        hits += int(ok.all(dim=1).sum())
    return hits / len(data.inputs)


def sequence_nll(model: GPT, data: EncodedExamples, device: torch.device, batch_size: int = 64) -> np.ndarray:
    """Summed NLL of each row's target tokens."""
    out = []
    for logits, y in _scored_batches(model, data, device, batch_size):
        logp = torch.log_softmax(logits.float(), dim=-1)
        mask = y != -100
        picked = logp.gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        out.append((-(picked * mask).sum(dim=1)).cpu().numpy())
    return np.concatenate(out)


def ranked_choice_accuracy(model: GPT, test: list[tuple[str, str]], labels: tuple[str, ...], tokenizer,
                           context: int, device: torch.device) -> float:
    """Accuracy of picking, for each prompt, the label with the lowest summed NLL."""
    candidates = [(prompt, label) for prompt, _ in test for label in labels]
    nll = sequence_nll(model, encode_examples(candidates, tokenizer, context), device)
    chosen = nll.reshape(len(test), len(labels)).argmin(axis=1)
    truth = [labels.index(c) for _, c in test]
    return float(np.mean(chosen == np.asarray(truth)))


def exact_match_and_nll(model: GPT, data: EncodedExamples, device: torch.device,
                        batch_size: int = 64) -> tuple[float, float]:
    """Exact match and mean NLL per target token, from the same teacher-forced pass."""
    hits, nll, count = 0, 0.0, 0
    for logits, y in _scored_batches(model, data, device, batch_size):
        ok = (logits.argmax(-1) == y) | (y == -100)
        hits += int(ok.all(dim=1).sum())
        nll += float(torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), y, ignore_index=-100,
                                                       reduction="sum"))
        count += int((y != -100).sum())
    return hits / len(data.inputs), nll / max(1, count)


def ranked_choice_and_nll(model: GPT, test: list[tuple[str, str]], labels: tuple[str, ...], tokenizer,
                          context: int, device: torch.device) -> tuple[float, float]:
    """Ranked-choice accuracy and the mean NLL per target token of the true labels (their
    completion and end-of-text tokens), from the same pass over every (prompt, label) pair."""
    candidates = [(prompt, label) for prompt, _ in test for label in labels]
    encoded = encode_examples(candidates, tokenizer, context)
    nll = sequence_nll(model, encoded, device).reshape(len(test), len(labels))
    n_targets = (encoded.targets != -100).sum(axis=1).reshape(len(test), len(labels))
    truth = np.asarray([labels.index(c) for _, c in test])
    rows = np.arange(len(test))
    accuracy = float(np.mean(nll.argmin(axis=1) == truth))
    return accuracy, float(nll[rows, truth].sum() / n_targets[rows, truth].sum())


def lm_score(model: GPT, test_tokens: np.ndarray, context: int, device: torch.device, max_tokens: int = 65536) -> float:
    from scaling.data.tokens import eval_windows

    loss = evaluate_loss(model, eval_windows(test_tokens, max_tokens, context), device)
    return math.exp(-loss)


def score(model: GPT, task, tokenizer, device: torch.device) -> float:
    return score_and_nll(model, task, tokenizer, device)[0]


def score_and_nll(model: GPT, task, tokenizer, device: torch.device) -> tuple[float, float]:
    """The task's score and the mean held-out NLL (nats per target token) it was computed from."""
    from scaling.data.tasks import LMTask

    if isinstance(task, LMTask):
        from scaling.data.tokens import eval_windows

        loss = evaluate_loss(model, eval_windows(task.test_tokens, 65536, model.context), device)
        return math.exp(-loss), loss
    if task.labels:
        return ranked_choice_and_nll(model, task.test, task.labels, tokenizer, model.context, device)
    return exact_match_and_nll(model, encode_examples(task.test, tokenizer, model.context), device)


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
        x = torch.from_numpy(np.ascontiguousarray(inp)).to(device)
        y = torch.from_numpy(np.ascontiguousarray(tgt)).to(device)
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
    before, nll_before = score_and_nll(base, task, tokenizer, device)
    model = copy.deepcopy(base)
    steps = finetune(model, task, tokenizer, device, seed)
    after, nll_after = score_and_nll(model, task, tokenizer, device)
    return TaskResult(task.name, before, after, steps, time.perf_counter() - start, nll_before, nll_after)
