"""Task scoring on known cases: an oracle model that always knows the answer, one that is
wrong on purpose, and a uniform model whose LM score is exactly 1/vocab."""

import math

import numpy as np
import pytest
import torch

from scaling.data.tokenizer import ByteTokenizer
from scaling.train.finetune import encode_examples, exact_match, lm_score, ranked_choice_accuracy

TOK = ByteTokenizer()


class OracleModel(torch.nn.Module):
    """Predicts, at every position, the next token of whichever known sequence the row starts
    with: prompt + answer + eos. `answers` maps prompt -> the completion it believes."""

    def __init__(self, answers: dict[str, str], context: int = 64):
        super().__init__()
        self.context = context
        self.vocab_size = 258
        self.sequences = {p: TOK.encode(p) + TOK.encode(c) + [TOK.eos_id] for p, c in answers.items()}

    def forward(self, idx, targets=None):
        logits = torch.full((*idx.shape, self.vocab_size), -10.0)
        for row, ids in enumerate(idx.tolist()):
            for seq in self.sequences.values():
                n = len(seq) - 1
                if ids[: min(n, len(ids))] == seq[: min(n, len(ids))]:
                    for pos in range(min(n, len(ids))):
                        logits[row, pos, seq[pos + 1]] = 10.0
                    break
        return logits, None


class UniformModel(torch.nn.Module):
    context = 32
    vocab_size = 258

    def forward(self, idx, targets=None):
        logits = torch.zeros((*idx.shape, self.vocab_size))
        loss = None
        if targets is not None:
            loss = torch.nn.functional.cross_entropy(logits.view(-1, self.vocab_size), targets.reshape(-1))
        return logits, loss


PAIRS = [("12+7=", "19"), ("3+4=", "7"), ("250+250=", "500"), ("9+9=", "18")]


def test_exact_match_is_one_for_an_oracle():
    data = encode_examples(PAIRS, TOK, context=64)
    assert exact_match(OracleModel(dict(PAIRS)), data, torch.device("cpu")) == 1.0


def test_exact_match_counts_a_wrong_or_unfinished_answer_as_a_miss():
    answers = dict(PAIRS)
    answers["3+4="] = "8"  # wrong digit
    answers["9+9="] = "181"  # right prefix, but does not stop
    data = encode_examples(PAIRS, TOK, context=64)
    assert exact_match(OracleModel(answers), data, torch.device("cpu")) == 0.5


def test_only_completion_tokens_are_targets():
    data = encode_examples([("ab=", "c")], TOK, context=64)
    scored = data.targets[0][data.targets[0] != -100].tolist()
    assert scored == [ord("c"), TOK.eos_id]


def test_ranked_choice_picks_the_most_likely_label():
    test = [("passage one\nSource:", " austen"), ("passage two\nSource:", " sotu")]
    labels = (" austen", " melville", " sotu")
    oracle = OracleModel(dict(test))
    assert ranked_choice_accuracy(oracle, test, labels, TOK, 64, torch.device("cpu")) == 1.0
    confused = OracleModel({"passage one\nSource:": " sotu", "passage two\nSource:": " sotu"})
    assert ranked_choice_accuracy(confused, test, labels, TOK, 64, torch.device("cpu")) == 0.5


def test_lm_score_of_a_uniform_model_is_one_over_vocab():
    tokens = np.random.default_rng(0).integers(0, 256, size=5000).astype(np.uint16)
    assert lm_score(UniformModel(), tokens, 32, torch.device("cpu")) == pytest.approx(1 / 258, rel=1e-6)
