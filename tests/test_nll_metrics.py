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


def test_ft_nll_is_a_minimised_objective_and_the_table_names_its_plasticity_objective():
    import pandas as pd

    from scaling.fit.table import direction_of, plasticity_objective

    assert direction_of("ft_nll") == "min" and direction_of("ft_arithmetic_nll_after") == "min"
    assert direction_of("ft_arithmetic_after") == "max" and direction_of("ft_nll_gain") == "max"
    assert plasticity_objective(pd.DataFrame({"plasticity": ["nll", "nll"]})) == ("ft_nll", "min")
    assert plasticity_objective(pd.DataFrame({"val_loss": [1.0]})) == ("ft_score", "max")


def test_the_snr_table_measures_the_decay_effect_against_the_seed_sd():
    import numpy as np
    import pandas as pd

    from scaling.report.snr import snr_html, snr_table

    rng = np.random.default_rng(0)
    rows = [{"cell": "c", "decay": d, "seed": s, "ft_nll": 2 + 0.1 * k + 0.3 * s + rng.normal(0, 0.01),
             "ft_score": 0.3 + rng.normal(0, 0.03)}
            for s in range(4) for k, d in enumerate([0, 0.1, 0.3, 1])]
    table = snr_table(pd.DataFrame(rows)).set_index("metric")
    assert table.loc["ft_nll", "effect"] == pytest.approx(0.3, abs=0.03)
    assert table.loc["ft_nll", "paired_sd"] == pytest.approx(0.01, rel=0.6)  # the seed offsets are removed
    assert table.loc["ft_nll", "seed_sd"] > 0.3  # ... but they are a trial's noise
    assert table.loc["ft_score", "snr"] < 3  # no decay effect: a range of noise
    assert "Signal-to-noise" in snr_html(pd.DataFrame(rows))
    one_seed = snr_table(pd.DataFrame([r for r in rows if r["seed"] == 0])).set_index("metric")
    assert math.isnan(one_seed.loc["ft_nll", "snr"])
