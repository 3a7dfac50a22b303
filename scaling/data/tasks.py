"""Downstream task data for fine-tuning (no model code).

Two shapes:
- `LMTask`: continue language modelling on a new domain; scored on held-out tokens.
- `SFTTask`: (prompt, completion) pairs; a completion is scored by exact match after greedy
  decoding, or, when `labels` is set (classification), by which label the model ranks first.

Built-in tasks: `code` (Python standard library source), `arithmetic` (a+b), `source` (which
corpus a held-out passage comes from). User tasks: "jsonl:<path>". Every task is a pure
function of (name, tokenizer, heldout_docs, seed): the same arguments give the same data.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
import sysconfig
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from scaling.data.corpus import Document, iter_jsonl, unit_hash
from scaling.data.tokenizer import Tokenizer
from scaling.errors import ConfigError, DataError


@dataclass(frozen=True)
class FinetuneRecipe:
    """The fixed fine-tuning recipe of a task: the same for every base model."""
    steps: int
    lr: float
    batch_size: int
    decay: float = 0.0
    warmup_frac: float = 0.1


@dataclass(frozen=True, eq=False)  # holds arrays: compare by identity
class LMTask:
    name: str
    train_tokens: np.ndarray  # 1-D int64, documents joined with eos
    test_tokens: np.ndarray
    recipe: FinetuneRecipe
    description: str


@dataclass(frozen=True)
class SFTTask:
    name: str
    train: list[tuple[str, str]]  # (prompt, completion)
    test: list[tuple[str, str]]
    recipe: FinetuneRecipe
    description: str
    labels: tuple[str, ...] | None = None  # the possible completions of a classification task


Task = LMTask | SFTTask

# Defaults sized for a ~10k-100k parameter model with context 128 on one CPU core: each
# fine-tune takes a few seconds. Tuned by the pipeline's owner, not by the science.
RECIPES = {
    "code": FinetuneRecipe(steps=100, lr=1e-3, batch_size=16),
    "arithmetic": FinetuneRecipe(steps=300, lr=3e-3, batch_size=64),
    "source": FinetuneRecipe(steps=200, lr=2e-3, batch_size=16),
    "jsonl": FinetuneRecipe(steps=200, lr=1e-3, batch_size=16),
}


def _join_tokens(texts: Sequence[str], tokenizer: Tokenizer) -> np.ndarray:
    out: list[int] = []
    for t in texts:
        out.extend(tokenizer.encode(t))
        out.append(tokenizer.eos_id)
    return np.asarray(out, dtype=np.int64)


# ---------------------------------------------------------------- code

STDLIB_SKIP = {"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3", "turtledemo", "ensurepip",
               "pydoc_data", "__phello__", "encodings", "__pycache__"}
CODE_TRAIN_BYTES, CODE_TEST_BYTES, CODE_MAX_FILE_BYTES = 300_000, 60_000, 40_000
CODE_TEST_FRAC = 0.2


def stdlib_files(root: Path | None = None) -> list[Path]:
    """Relative paths of the interpreter's pure-Python standard library, sorted; without tests,
    IDLE, installed packages, codec tables and generated data."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    files = []
    for folder, subdirs, names in os.walk(root):
        subdirs[:] = [s for s in subdirs if s not in STDLIB_SKIP and not s.startswith("config-")]
        rel = Path(folder).relative_to(root)
        files += [rel / n for n in names if n.endswith(".py")]
    return sorted(files, key=lambda r: r.as_posix())


def select_code_files(files: Sequence[Path], sizes: Sequence[int]) -> tuple[list[Path], list[Path]]:
    """A stable rule: a file is test when sha256(path) < 0.2, else train; files are taken in
    hash order (spread over the whole library), skipping those over 40 KB, until each side
    reaches its byte cap."""
    train, test, used = [], [], {"train": 0, "test": 0}
    caps = {"train": CODE_TRAIN_BYTES, "test": CODE_TEST_BYTES}
    for rel, size in sorted(zip(files, sizes), key=lambda fs: (unit_hash(fs[0].as_posix()), fs[0].as_posix())):
        side = "test" if unit_hash("split:" + rel.as_posix()) < CODE_TEST_FRAC else "train"
        if size > CODE_MAX_FILE_BYTES or used[side] + size > caps[side]:
            continue
        used[side] += size
        (test if side == "test" else train).append(rel)
    return sorted(train), sorted(test)


_CODE_CACHE: dict[str, LMTask] = {}


def code_task(tokenizer: Tokenizer, heldout_docs: Sequence[Document], seed: int = 0) -> LMTask:
    """New-domain language modelling on Python source (the running interpreter's stdlib).
    `seed` does not change the data: the file list is fixed by the rule in select_code_files."""
    if tokenizer.fingerprint in _CODE_CACHE:
        return _CODE_CACHE[tokenizer.fingerprint]
    root = Path(sysconfig.get_paths()["stdlib"])
    files = stdlib_files(root)
    if not files:
        raise DataError(f"task code: no standard-library .py files found under {root}")
    train, test = select_code_files(files, [(root / f).stat().st_size for f in files])
    h = hashlib.sha256()
    texts: dict[str, list[str]] = {"train": [], "test": []}
    for side, chosen in (("train", train), ("test", test)):
        for rel in chosen:
            text = (root / rel).read_text(encoding="utf-8", errors="replace")
            h.update(f"{side}:{rel.as_posix()}\n".encode())
            h.update(text.encode("utf-8"))
            texts[side].append(text)
    version = ".".join(map(str, sys.version_info[:3]))
    desc = (f"Python {version} standard library source ({root}): {len(train)} train files "
            f"({sum(map(len, texts['train']))} chars), {len(test)} test files ({sum(map(len, texts['test']))} chars); "
            f"content sha256 {h.hexdigest()[:16]}")
    task = LMTask("code", _join_tokens(texts["train"], tokenizer), _join_tokens(texts["test"], tokenizer),
                  RECIPES["code"], desc)
    _CODE_CACHE[tokenizer.fingerprint] = task
    return task


# ---------------------------------------------------------------- arithmetic

ARITH_MAX_OPERAND = 99  # 1-2 digit operands: 10,000 distinct problems
ARITH_TRAIN, ARITH_TEST = 9_800, 200


def arithmetic_task(tokenizer: Tokenizer, heldout_docs: Sequence[Document], seed: int = 0,
                    n_train: int = ARITH_TRAIN, n_test: int = ARITH_TEST,
                    max_operand: int = ARITH_MAX_OPERAND) -> SFTTask:
    """"37+48=" -> "85" with operands drawn uniformly from 0..max_operand; every prompt occurs once,
    so train and test are disjoint.

    Operands stop at two digits because models of 10k-100k parameters learn almost nothing of
    three-digit addition within a fine-tuning budget of seconds (measured: exact match 0.01-0.02
    after 600 steps), which would leave the task at its floor for every base model."""
    n_distinct = (max_operand + 1) ** 2
    if n_train + n_test > n_distinct:
        raise ConfigError(f"task arithmetic: {n_train} + {n_test} problems exceed the {n_distinct} distinct "
                          f"sums of operands 0..{max_operand}")
    rng = np.random.default_rng([seed, 0xA117])
    chosen = rng.permutation(n_distinct)[: n_train + n_test]
    pairs = [(f"{a}+{b}=", str(a + b)) for a, b in (divmod(int(i), max_operand + 1) for i in chosen)]
    desc = (f"a+b with operands 0..{max_operand}, seed {seed}: {n_train} train, {n_test} test, "
            f"disjoint prompts; exact match of the sum")
    return SFTTask("arithmetic", pairs[n_test:], pairs[:n_test], RECIPES["arithmetic"], desc)


# ---------------------------------------------------------------- source

SOURCE_TRAIN, SOURCE_TEST, PASSAGE_CHARS = 2_000, 300, 100
SOURCE_TEST_DOC_FRAC = 1 / 3


def cut_passage(text: str, start: int, chars: int) -> str:
    """About `chars` characters of `text` from `start`, cut at word boundaries on both sides,
    whitespace collapsed to single spaces."""
    if start > 0:
        nxt = re.search(r"\s", text[start:])
        start = start + nxt.end() if nxt else len(text)
    piece = re.sub(r"\s+", " ", text[start:start + chars + 1])
    if len(piece) > chars:
        cut = piece.rfind(" ", 0, chars + 1)
        piece = piece[:cut] if cut > chars // 2 else piece[:chars]
    return piece.strip()


def source_prompt(passage: str) -> str:
    return f"{passage}\nSource:"


def _sample_passages(docs: Sequence[Document], n: int, rng: np.random.Generator, chars: int) -> list[str]:
    """n passages from `docs`, documents chosen in proportion to their length."""
    lengths = np.array([len(d.text) for d in docs], dtype=np.float64)
    out: list[str] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 20 * n + 100:
            raise DataError(f"task source: documents {[d.id for d in docs][:3]}... are too short for "
                            f"{chars}-character passages")
        d = docs[int(rng.choice(len(docs), p=lengths / lengths.sum()))]
        start = int(rng.integers(0, max(1, len(d.text) - chars)))
        passage = cut_passage(d.text, start, chars)
        if len(passage) >= chars // 2:
            out.append(passage)
    return out


def source_task(tokenizer: Tokenizer, heldout_docs: Sequence[Document], seed: int = 0,
                n_train: int = SOURCE_TRAIN, n_test: int = SOURCE_TEST, chars: int = PASSAGE_CHARS) -> SFTTask:
    """Which corpus (document label `source`) a held-out passage comes from.

    Prompt "<passage>\\nSource:", completion " <label>" (e.g. " austen"). Only documents held out
    of pretraining are used; within each label, a third of the documents (by sha256 of the id,
    at least one) give the test passages and the rest the train passages, so no train and test
    passage share a document. Classes are balanced in both splits. Passages are ~100 characters
    so that prompt and label fit a 128-token context even at byte level.
    """
    if not heldout_docs:
        raise DataError("task source: no held-out documents (a pre-tokenized corpus has none); "
                        "use a text corpus or drop the task")
    by_label: dict[str, list[Document]] = defaultdict(list)
    for d in heldout_docs:
        by_label[d.source].append(d)
    too_few = sorted(label for label, docs in by_label.items() if len(docs) < 2)
    if len(by_label) < 2 or too_few:
        raise DataError(f"task source: needs at least 2 labels with at least 2 held-out documents each; got "
                        f"{ {k: len(v) for k, v in sorted(by_label.items())} }")
    labels = tuple(sorted(by_label))
    rng = np.random.default_rng([seed, 0x50CE])
    train: list[tuple[str, str]] = []
    test: list[tuple[str, str]] = []
    for label in labels:
        ranked = sorted(by_label[label], key=lambda d: (unit_hash(d.id), d.id))
        n_test_docs = min(len(ranked) - 1, max(1, round(SOURCE_TEST_DOC_FRAC * len(ranked))))
        completion = f" {label}"
        test += [(source_prompt(p), completion) for p in _sample_passages(ranked[:n_test_docs], n_test // len(labels), rng, chars)]
        train += [(source_prompt(p), completion) for p in _sample_passages(ranked[n_test_docs:], n_train // len(labels), rng, chars)]
    order_train, order_test = rng.permutation(len(train)), rng.permutation(len(test))
    desc = (f"classify {chars}-character held-out passages by source {list(labels)}, seed {seed}: "
            f"{len(train)} train / {len(test)} test passages, balanced, from disjoint documents")
    return SFTTask("source", [train[i] for i in order_train], [test[i] for i in order_test], RECIPES["source"], desc,
                   labels=tuple(f" {label}" for label in labels))


# ---------------------------------------------------------------- user tasks

USER_TEST_FRAC = 0.2


def jsonl_task(path: str | Path, tokenizer: Tokenizer, seed: int = 0) -> LMTask | SFTTask:
    """A user task from JSONL, one object per line, all of one kind:
      {"prompt": str, "completion": str}  -> SFTTask scored by exact match
      {"text": str, "label": str}         -> classification SFTTask: prompt "<text>\\nLabel:", completion " <label>"
      {"text": str}                       -> LMTask (language modelling on the texts)
    An optional "split": "train" | "test" fixes the split; otherwise a record is test when
    sha256 of its prompt/text < 0.2 (so identical prompts never straddle the split).
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"task file {file}: no such file")
    records: list[tuple[int, dict]] = []
    example = '{"prompt": ..., "completion": ...}'
    for lineno, rec in iter_jsonl(file, "task file", example):
        if not isinstance(rec, dict):
            raise DataError(f"task file {file} line {lineno}: expected an object like {example}")
        records.append((lineno, rec))
    if not records:
        raise DataError(f'task file {file}: empty; expected JSONL lines {{"prompt": ..., "completion": ...}} or {{"text": ...}}')
    kind = _record_kind(file, *records[0])
    examples: list[tuple[str, tuple[str, str] | str]] = []  # (split key, example)
    splits: list[str | None] = []
    for lineno, rec in records:
        if _record_kind(file, lineno, rec) != kind:
            raise DataError(f"task file {file} line {lineno}: a {_record_kind(file, lineno, rec)!r} record in a "
                            f"{kind!r} file (line {records[0][0]}); all lines must have the same fields")
        split = rec.get("split")
        if split not in (None, "train", "test"):
            raise DataError(f'task file {file} line {lineno}: field "split" must be "train" or "test", got {split!r}')
        splits.append(split)
        if kind == "sft":
            examples.append((rec["prompt"], (rec["prompt"], rec["completion"])))
        elif kind == "label":
            examples.append((rec["text"], (f"{rec['text']}\nLabel:", f" {rec['label']}")))
        else:
            examples.append((rec["text"], rec["text"]))
    is_test = [s == "test" if s else unit_hash(key) < USER_TEST_FRAC for s, (key, _) in zip(splits, examples)]
    if all(is_test) or not any(is_test):
        if len(examples) < 2 or any(splits):
            raise DataError(f"task file {file}: needs at least one train and one test example "
                            f"(got {len(examples)} record(s), {sum(is_test)} test)")
        ranked = sorted(range(len(examples)), key=lambda i: unit_hash(examples[i][0]))
        n_test = max(1, round(USER_TEST_FRAC * len(examples)))
        is_test = [False] * len(examples)
        for i in ranked[:n_test]:
            is_test[i] = True
    train = [ex for (_, ex), t in zip(examples, is_test) if not t]
    test = [ex for (_, ex), t in zip(examples, is_test) if t]
    name = f"jsonl:{path}"
    desc = f"user task {file} ({kind}): {len(train)} train / {len(test)} test records"
    if kind == "text":
        return LMTask(name, _join_tokens(train, tokenizer), _join_tokens(test, tokenizer), RECIPES["jsonl"], desc)
    labels = tuple(sorted({c for _, c in train + test})) if kind == "label" else None
    return SFTTask(name, train, test, RECIPES["jsonl"], desc, labels=labels)


def _record_kind(file: Path, lineno: int, rec: dict) -> str:
    def need_str(field: str) -> str:
        if not isinstance(rec.get(field), str):
            raise DataError(f'task file {file} line {lineno}: field "{field}" must be a string, got {rec.get(field)!r:.40}')
        return rec[field]

    if "prompt" in rec or "completion" in rec:
        need_str("prompt")
        if not need_str("completion"):
            raise DataError(f'task file {file} line {lineno}: field "completion" is empty')
        return "sft"
    if "text" in rec:
        if not need_str("text").strip():
            raise DataError(f'task file {file} line {lineno}: field "text" is empty')
        if "label" in rec:
            if not isinstance(rec["label"], (str, int)) or not str(rec["label"]).strip():
                raise DataError(f'task file {file} line {lineno}: field "label" must be a non-empty string')
            return "label"
        return "text"
    raise DataError(f'task file {file} line {lineno}: expected fields "prompt" and "completion", or "text" '
                    f'(optionally with "label"); got {sorted(rec)}')


# ---------------------------------------------------------------- registry

TaskBuilder = Callable[[Tokenizer, Sequence[Document], int], Task]
TASKS: dict[str, TaskBuilder] = {
    "code": code_task,
    "arithmetic": arithmetic_task,
    "source": source_task,
}
DEFAULT_TASKS = ("code", "arithmetic", "source")


def get_task(name: str, tokenizer: Tokenizer, heldout_docs: Sequence[Document], seed: int = 0) -> Task:
    """A task by name: one of TASKS, or "jsonl:<path>" for a user file."""
    if name.startswith("jsonl:"):
        return jsonl_task(name[len("jsonl:"):], tokenizer, seed)
    if name not in TASKS:
        raise ConfigError(f"task {name!r}: expected one of {sorted(TASKS)} or 'jsonl:<path>'")
    return TASKS[name](tokenizer, heldout_docs, seed)
