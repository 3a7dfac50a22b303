"""Downstream task data: determinism, disjoint splits, balance, user JSONL validation."""
import json
from collections import Counter

import pytest

from scaling.data.corpus import Document
from scaling.data.tasks import LMTask, SFTTask, TASKS, cut_passage, get_task
from scaling.data.tokenizer import ByteTokenizer
from scaling.errors import ConfigError, DataError

TOK = ByteTokenizer()
WORDS = {"austen": "the ball and the drawing room were delightful said Emma ",
         "melville": "the whale breached and the harpooneers shouted from the boats ",
         "sotu": "the Congress shall consider the budget of the federal government "}


@pytest.fixture
def heldout():
    return [Document(f"{src}/{i}", WORDS[src] * 40, src, "19th") for src in WORDS for i in range(6)]


def test_registry():
    assert set(TASKS) == {"code", "arithmetic", "source"}
    with pytest.raises(ConfigError, match="task 'sentiment'"):
        get_task("sentiment", TOK, [])


def test_arithmetic_is_deterministic_disjoint_and_correct():
    task = get_task("arithmetic", TOK, [], seed=3)
    assert isinstance(task, SFTTask) and task.labels is None
    assert (len(task.train), len(task.test)) == (9_800, 200)
    assert get_task("arithmetic", TOK, [], seed=3).test == task.test
    assert get_task("arithmetic", TOK, [], seed=4).test != task.test
    prompts = [p for p, _ in task.train]
    assert len(set(prompts)) == len(prompts)
    assert not set(prompts) & {p for p, _ in task.test}
    for prompt, completion in task.train[:100] + task.test:
        a, b = prompt.rstrip("=").split("+")
        assert 1 <= len(a) <= 2 and 1 <= len(b) <= 2 and int(a) + int(b) == int(completion)


def test_source_task_is_balanced_and_uses_disjoint_documents(heldout):
    task = get_task("source", TOK, heldout, seed=0)
    assert task.labels == (" austen", " melville", " sotu")
    for part, n in ((task.train, 2000), (task.test, 300)):
        counts = Counter(c for _, c in part)
        assert set(counts.values()) == {n // 3}
        assert all(p.endswith("\nSource:") and 50 <= len(p) - len("\nSource:") <= 100 for p, _ in part)
    assert get_task("source", TOK, heldout, seed=0) == task


def test_source_passages_come_from_different_documents():
    # every document has unique words, so a passage names its document
    docs = [Document(f"austen/{i}", f"doc{i}word " * 300, "austen", "") for i in range(6)]
    docs += [Document(f"sotu/{i}", f"speech{i}word " * 300, "sotu", "") for i in range(6)]
    task = get_task("source", TOK, docs)
    used = lambda part: {w for p, _ in part for w in p.split() if w.endswith("word")}
    assert used(task.train) and used(task.test) and not used(task.train) & used(task.test)


def test_source_needs_heldout_documents():
    with pytest.raises(DataError, match="no held-out documents"):
        get_task("source", TOK, [])


def test_cut_passage_cuts_at_word_boundaries():
    text = "alpha beta gamma delta epsilon zeta eta theta"
    assert cut_passage(text, 2, 20) == "beta gamma delta"
    assert cut_passage(text, 0, 11) == "alpha beta"


def test_code_task_is_traceable_python_source():
    task = get_task("code", TOK, [])
    assert isinstance(task, LMTask)
    assert "Python 3." in task.description and "sha256" in task.description
    assert 200_000 < len(task.train_tokens) <= 310_000 and 30_000 < len(task.test_tokens) <= 62_000
    assert "def " in TOK.decode(task.train_tokens[:20_000].tolist())


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return f"jsonl:{path}"


def test_user_prompt_completion_task(tmp_path):
    name = _write(tmp_path / "t.jsonl", [{"prompt": f"q{i}?", "completion": f" a{i}"} for i in range(50)])
    task = get_task(name, TOK, [])
    assert isinstance(task, SFTTask) and task.labels is None
    assert len(task.train) + len(task.test) == 50 and task.test
    assert not {p for p, _ in task.train} & {p for p, _ in task.test}


def test_user_label_and_text_tasks(tmp_path):
    labelled = get_task(_write(tmp_path / "l.jsonl", [{"text": f"t{i}", "label": "pos" if i % 2 else "neg"}
                                                       for i in range(20)]), TOK, [])
    assert labelled.labels == (" neg", " pos")
    text = get_task(_write(tmp_path / "x.jsonl", [{"text": f"document {i}"} for i in range(10)]), TOK, [])
    assert isinstance(text, LMTask) and len(text.train_tokens) and len(text.test_tokens)


def test_user_split_field_is_respected(tmp_path):
    recs = [{"prompt": "a", "completion": "b", "split": "train"}, {"prompt": "c", "completion": "d", "split": "test"}]
    task = get_task(_write(tmp_path / "s.jsonl", recs), TOK, [])
    assert task.train == [("a", "b")] and task.test == [("c", "d")]


@pytest.mark.parametrize("lines, message", [
    (['{"prompt": "a", "completion": 3}'], r'line 1: field "completion" must be a string'),
    (['{"prompt": "a", "completion": "b"}', "not json"], r"line 2: not valid JSON"),
    (['{"prompt": "a", "completion": "b"}', '{"text": "x"}'], r"line 2: a 'text' record in a 'sft' file"),
    (['{"question": "a"}'], r'line 1: expected fields "prompt" and "completion"'),
    ([], r"empty"),
])
def test_user_task_errors_name_file_line_and_field(tmp_path, lines, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message) as err:
        get_task(f"jsonl:{path}", TOK, [])
    assert "bad.jsonl" in str(err.value)


def test_missing_user_task_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        get_task(f"jsonl:{tmp_path / 'none.jsonl'}", TOK, [])
