"""`scaling bench --unit`: whole trials stacked against one after another."""

import json

import pytest

from scaling.cli import main
from scaling.data import tasks as task_data
from scaling.train.bench_unit import UnitBenchResult, unit_configs
from scaling.config import RunConfig


@pytest.fixture
def short_recipes(monkeypatch):
    short = {name: task_data.FinetuneRecipe(steps=4, lr=r.lr, batch_size=r.batch_size)
             for name, r in task_data.RECIPES.items()}
    monkeypatch.setattr(task_data, "RECIPES", short)


def test_unit_configs_differ_in_decay_then_seed():
    configs = unit_configs(RunConfig(size="13k", tpp=1.0), 8)
    assert [(c.decay, c.seed) for c in configs][:2] == [(0.0, 0), (0.03, 0)]
    assert len({(c.decay, c.seed) for c in configs}) == 8 and configs[6].seed == 1


def test_speedups_are_medians_of_paired_repeats():
    result = UnitBenchResult(config={}, ks=(2,), sequential_s={2: [10.0, 30.0, 12.0]}, stacked_s={2: [5.0, 10.0, 8.0]},
                             sequential_phases=[{"pretrain": 1.0, "score": 3.0}],
                             stacked_phases={2: [{"pretrain": 1.0, "fine-tune": 1.0}]})
    out = result.to_dict()
    assert out["unit_speedup"]["2"] == pytest.approx(2.0)  # ratios 2, 3, 1.5: median 2
    assert out["unit_trials_per_hour"]["2"]["stacked"] == pytest.approx(3600 * 2 / 8.0)
    assert out["unit_phase_share"]["sequential"] == {"pretrain": 0.25, "probes": 0.0, "fine-tune": 0.0, "score": 0.75}
    assert out["unit_phase_share"]["2"]["stacked"]["fine-tune"] == pytest.approx(0.5)


@pytest.mark.slow
def test_bench_unit_reports_trials_per_hour_and_phase_shares(short_recipes, capsys, one_thread):
    code = main(["bench", "--unit", "--size", "13k", "--tpp", "0.3", "--context", "32", "--batch-size", "4",
                 "--k", "1,2", "--repeats", "1", "--tasks", "arithmetic", "--device", "cpu", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["unit_speedup"]) == {"1", "2"} and all(v > 0 for v in out["unit_speedup"].values())
    rates = out["unit_trials_per_hour"]["2"]
    assert rates["stacked"] > 0 and rates["sequential"] > 0
    for shares in (out["unit_phase_share"]["2"]["stacked"], out["unit_phase_share"]["sequential"]):
        assert set(shares) == {"pretrain", "probes", "fine-tune", "score"}
        assert sum(shares.values()) == pytest.approx(1.0)
        assert all(v > 0 for v in shares.values())


def test_bench_unit_needs_a_k():
    assert main(["bench", "--unit", "--size", "13k", "--k", ""]) == 2


def test_a_capped_sequential_pass_extrapolates_per_trial(monkeypatch):
    from types import SimpleNamespace

    from scaling.train import bench_unit
    import scaling.train.pipeline as pipeline

    clock = {"now": 0.0, "stacked": []}  # each trial "takes" 10 s alone; a stacked unit 15 s

    def one(config):
        clock["now"] += 10.0

    def stack(configs):
        clock["now"] += 15.0
        clock["stacked"].append(len(configs))

    monkeypatch.setattr(pipeline, "run_pipeline", one)
    monkeypatch.setattr(pipeline, "run_pipeline_batched", stack)
    monkeypatch.setattr(bench_unit, "time", SimpleNamespace(perf_counter=lambda: clock["now"],
                                                            process_time=lambda: clock["now"]))
    result = bench_unit.run_unit_bench(RunConfig(size="13k", tpp=1.0, device="cpu"), (1, 8), repeats=1,
                                       sequential_trials=2)
    assert sorted(clock["stacked"]) == [1, 8]
    assert result.sequential_s == {1: [10.0], 8: [80.0]}  # K = 8: 8 x the mean of the 2 trials run
    out = result.to_dict()
    assert out["sequential_trials"] == 2 and out["sequential_extrapolated"] == [8]
    assert out["unit_speedup"]["8"] == pytest.approx(80.0 / 15.0)
    assert out["unit_speedup_cpu_time"]["8"] == pytest.approx(80.0 / 15.0)
