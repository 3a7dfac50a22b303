"""Held-out NLL next to each task's score, from the same scoring pass: a uniform model's NLL is
ln(vocab) per target token whatever the task; an oracle's is ~0 where it is right."""

import math

import pytest
import torch

from scaling.train.finetune import (encode_examples, exact_match, exact_match_and_nll, ranked_choice_accuracy,
                                    ranked_choice_and_nll)
from tests.test_scoring import PAIRS, TOK, OracleModel, UniformModel

CPU = torch.device("cpu")


def test_a_uniform_model_has_nll_ln_vocab_on_exact_match_and_ranked_choice_tasks():
    model = UniformModel()
    model.context = 64
    score, nll = exact_match_and_nll(model, encode_examples(PAIRS, TOK, 64), CPU)
    assert score == 0.0 and nll == pytest.approx(math.log(258), rel=1e-6)
    test = [("passage one\nSource:", " austen"), ("passage two\nSource:", " sotu")]
    _, nll = ranked_choice_and_nll(model, test, (" austen", " melville", " sotu"), TOK, 64, CPU)
    assert nll == pytest.approx(math.log(258), rel=1e-6)


def test_the_score_from_the_shared_pass_equals_the_score_alone():
    answers = dict(PAIRS)
    answers["3+4="] = "8"
    data = encode_examples(PAIRS, TOK, 64)
    score, nll = exact_match_and_nll(OracleModel(answers), data, CPU)
    assert score == exact_match(OracleModel(answers), data, CPU) == 0.75
    right, _ = exact_match_and_nll(OracleModel(dict(PAIRS)), data, CPU)
    assert right == 1.0
    assert nll > exact_match_and_nll(OracleModel(dict(PAIRS)), data, CPU)[1] + 0.5  # one wrong digit costs NLL


def test_ranked_choice_nll_is_that_of_the_true_label_only():
    test = [("passage one\nSource:", " austen"), ("passage two\nSource:", " sotu")]
    labels = (" austen", " melville", " sotu")
    oracle = OracleModel(dict(test))
    acc, nll = ranked_choice_and_nll(oracle, test, labels, TOK, 64, CPU)
    assert acc == ranked_choice_accuracy(oracle, test, labels, TOK, 64, CPU) == 1.0
    assert nll < 1e-3
    confused = OracleModel({"passage one\nSource:": " sotu", "passage two\nSource:": " sotu"})
    acc, nll_confused = ranked_choice_and_nll(confused, test, labels, TOK, 64, CPU)
    assert acc == 0.5 and nll_confused > 1.0


@pytest.mark.slow
def test_a_trial_records_nll_before_and_after_per_task_and_their_means():
    from scaling.config import RunConfig
    from scaling.train.pipeline import run_pipeline

    m = run_pipeline(RunConfig(size="13k", tokens=4096, batch_size=4, lr=3e-3, decay=0.1, tasks=("source",),
                               probes=False, eval_tokens=2048, device="cpu"))
    before, after = m["ft_source_nll_before"], m["ft_source_nll_after"]
    assert 0 < after < before  # fine-tuning on the labels lowers their held-out NLL
    assert m["ft_nll"] == after and m["ft_nll_gain"] == pytest.approx(before - after)
