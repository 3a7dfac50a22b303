"""The batched trainer: K stacked models train exactly like K separate `pretrain` runs."""

import json
import math
from pathlib import Path

import pytest
import torch

from scaling.train.pipeline import run_pipeline_batched
from scaling.train.stacked import check_stackable, pretrain_batched
from scaling.train.stacked_model import StackedAdamW, StackedGPT
from scaling.config import RunConfig
from scaling.errors import ConfigError, TrainingDiverged
from scaling.core.shapes import LADDER
from scaling.train.model import GPT
from scaling.train.single import build_optimizer, pretrain

from tests.synthetic import VOCAB, pattern_tokens

# the gradient buffers view a strided (K, P) buffer on purpose (see scaling.train.stacked_model)
pytestmark = [pytest.mark.filterwarnings("ignore:grad and param do not obey"), pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def tokens():
    return pattern_tokens(0)


def tiny(**changes) -> RunConfig:
    base = dict(size="13k", context=16, batch_size=4, tokens=16 * 4 * 6, lr=1e-2, eval_tokens=128, tasks=(),
                probes=False, device="cpu")
    base.update(changes)
    return RunConfig(**base)


@pytest.mark.slow
def test_batched_and_sequential_training_give_the_same_losses_for_the_same_seeds(tokens):
    train, val = tokens
    configs = [tiny(decay=0.0, seed=0), tiny(decay=0.5, seed=0), tiny(decay=3.0, seed=1)]
    sequential = []
    for cfg in configs:
        steps: list = []
        result = pretrain(cfg, train, val, VOCAB, on_step=lambda s, loss, out=steps: out.append(loss))
        sequential.append((steps, result))
    batched_steps: list = []
    batched = pretrain_batched(configs, train, val, VOCAB, on_step=lambda step, losses: batched_steps.append(losses))
    for k, (steps, result) in enumerate(sequential):
        mine = batched[k]
        assert mine.error is None
        assert [row[k] for row in batched_steps] == pytest.approx(steps, rel=1e-4)
        assert mine.metrics["val_loss"] == pytest.approx(result.metrics["val_loss"], rel=1e-4)
        assert mine.metrics["train_loss"] == pytest.approx(result.metrics["train_loss"], rel=1e-4)
        assert [p["val_loss"] for p in mine.curve] == pytest.approx([p["val_loss"] for p in result.curve], rel=1e-4)
        # Adam divides by sqrt(v), so rounding in a near-zero gradient can move a weight by a
        # visible fraction of one step (lr 1e-2): weights agree to a few 1e-4, losses to 1e-4
        for (name, a), b in zip(result.model.state_dict().items(), mine.model.state_dict().values()):
            assert torch.allclose(a, b, atol=5e-4), name
    # the losses really moved, so the comparison means something
    assert sequential[0][0][-1] < sequential[0][0][0] - 0.1


def test_metrics_carry_the_pretrain_keys_and_the_batch(tokens):
    train, val = tokens
    cfg = tiny()
    single = pretrain(cfg, train, val, VOCAB).metrics
    stacked = pretrain_batched([cfg, cfg.replace(decay=1.0)], train, val, VOCAB)[1].metrics
    assert set(single) <= set(stacked)
    assert stacked["decay"] == 1.0 and stacked["batch_models"] == 2
    assert stacked["batch_tokens_per_s"] == pytest.approx(2 * stacked["tokens_per_s"])


def test_stacked_model_round_trips_plain_models_exactly():
    models = []
    for seed in (3, 4):
        torch.manual_seed(seed)
        models.append(GPT(LADDER["56k"], VOCAB, 16))
    stacked = StackedGPT.from_models(models, torch.device("cpu"))
    for k, model in enumerate(models):
        back = stacked.extract(k).state_dict()
        for name, value in model.state_dict().items():
            assert torch.equal(back[name], value), name


def test_stacked_forward_equals_each_gpt_forward():
    torch.manual_seed(0)
    models = [GPT(LADDER["56k"], VOCAB, 16) for _ in range(3)]
    stacked = StackedGPT.from_models(models, torch.device("cpu"))
    idx = torch.randint(0, VOCAB, (3, 5, 17))
    losses = stacked.losses(idx[..., :-1], idx[..., 1:])
    for k, model in enumerate(models):
        _, expected = model(idx[k, :, :-1], idx[k, :, 1:])
        assert losses[k].item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("decay_params", ["all", "matrices"])
def test_optimizer_applies_each_models_decay_and_clip_like_torch_adamw(decay_params):
    """One step with a given gradient: model k must move exactly as torch's AdamW (with its own
    decay and its own global-norm clip) moves a plain GPT."""
    configs = [RunConfig(size="13k", lr=0.05, decay=d, decay_params=decay_params, grad_clip=0.5)
               for d in (0.0, 1.0, 4.0)]
    torch.manual_seed(1)
    models = [GPT(LADDER["13k"], VOCAB, 16) for _ in configs]
    stacked = StackedGPT.from_models(models, torch.device("cpu"))
    opt = StackedAdamW(stacked, configs)
    plain = [build_optimizer(model, cfg, torch.device("cpu")) for cfg, model in zip(configs, models)]
    for step in range(2):
        for k, model in enumerate(models):
            gen = torch.Generator().manual_seed(10 * step + k)
            for p in model.parameters():  # model 2's gradients are large enough to be clipped
                p.grad = torch.randn(p.shape, generator=gen) * (3.0 if k == 2 else 0.01)
        stacked.grad.copy_(StackedGPT.from_models([_grads_as_model(m) for m in models], torch.device("cpu")).flat)
        opt.step(lr=0.05)
        for cfg, model, optimizer in zip(configs, models, plain):
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
    for k, model in enumerate(models):
        back = stacked.extract(k).state_dict()
        for name, value in model.state_dict().items():
            assert torch.allclose(back[name], value, atol=1e-6), (k, name)


def _grads_as_model(model: GPT) -> GPT:
    import copy

    holder = copy.deepcopy(model)
    with torch.no_grad():
        for p, src in zip(holder.parameters(), model.parameters()):
            p.copy_(src.grad)
    return holder


def test_larger_decay_shrinks_weights_of_that_model_only(tokens):
    train, val = tokens
    results = pretrain_batched([tiny(decay=0.0), tiny(decay=1.0)], train, val, VOCAB)
    norms = [sum(p.detach().pow(2).sum().item() for p in r.model.parameters()) for r in results]
    assert norms[1] < norms[0]
    alone = pretrain(tiny(decay=0.0), train, val, VOCAB)
    assert results[0].metrics["val_loss"] == pytest.approx(alone.metrics["val_loss"], rel=1e-4)


def test_a_diverging_model_is_marked_and_the_others_train_on(tokens):
    train, val = tokens
    # a coupled decay of 1e6 at lr 1e-2 multiplies weights by about -1e4 each step
    results = pretrain_batched([tiny(decay=0.1), tiny(decay=1e6)], train, val, VOCAB)
    ok, bad = results
    assert isinstance(bad.error, TrainingDiverged) and bad.model is None
    assert "diverged" in bad.metrics["error"] and math.isnan(bad.metrics["val_loss"])
    assert ok.error is None
    alone = pretrain(tiny(decay=0.1), train, val, VOCAB)
    assert ok.metrics["val_loss"] == pytest.approx(alone.metrics["val_loss"], rel=1e-4)
    with pytest.raises(TrainingDiverged):
        pretrain(tiny(decay=1e6), train, val, VOCAB)


def test_two_threads_split_the_models_and_give_the_same_result(tokens):
    train, val = tokens
    configs = [tiny(decay=d, seed=s) for d, s in ((0.0, 0), (0.3, 1), (1.0, 1))]  # per-model batches too
    one = pretrain_batched(configs, train, val, VOCAB)
    torch.set_num_threads(2)
    two = pretrain_batched(configs, train, val, VOCAB)
    for a, b in zip(one, two):
        assert b.metrics["val_loss"] == pytest.approx(a.metrics["val_loss"], rel=1e-5)


def test_configs_must_differ_only_in_decay_and_seed():
    check_stackable([tiny(decay=0.1, seed=0), tiny(decay=1.0, seed=3)])
    with pytest.raises(ConfigError, match=r"configs\[1\]\.lr"):
        check_stackable([tiny(), tiny(lr=0.5)])
    with pytest.raises(ConfigError, match="at least one"):
        check_stackable([])


def test_pipeline_batched_returns_run_pipeline_metrics_per_model():
    from scaling.train.pipeline import run_pipeline

    configs = [tiny(decay=0.0, context=32, tokens=32 * 4 * 3), tiny(decay=1.0, context=32, tokens=32 * 4 * 3)]
    batched = run_pipeline_batched(configs)
    single = run_pipeline(configs[1])
    assert set(batched[1]) >= set(single)
    assert batched[1]["val_loss"] == pytest.approx(single["val_loss"], rel=1e-4)
    assert [m["decay"] for m in batched] == [0.0, 1.0]
    json.dumps([{k: v for k, v in m.items()} for m in batched])  # JSON-serialisable, as run_pipeline's


def test_bench_json_reports_the_reference_ratio_and_batched_speedups(capsys):
    from scaling.cli import main

    code = main(["bench", "--size", "13k", "--context", "16", "--batch-size", "4", "--steps", "2",
                 "--repeats", "1", "--k", "1,2", "--threads", "1", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ratio_vs_reference"] > 0
    assert set(out["speedup_batched"]) == {"1", "2"}
    assert all(v > 0 for v in out["speedup_batched"].values())


def test_bench_takes_its_configuration_from_a_study_spec(capsys):
    """`scaling bench --spec` benchmarks the spec's first size at the spec's context and batch."""
    from scaling.cli import main

    quickstart = str(Path(__file__).parents[1] / "studies" / "quickstart.toml")
    code = main(["bench", "--spec", quickstart, "--context", "16", "--steps", "2",
                 "--repeats", "2", "--k", "2", "--threads", "1", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["size"] == "13k" and out["config"]["batch_size"] == 16
    assert out["config"]["context"] == 16 and out["config"]["lr"] == 6e-3  # the flag wins over the spec
    assert len(out["trainer_runs"]) == len(out["reference_runs"]) == 2
    paired = sorted(t / r for t, r in zip(out["trainer_runs"], out["reference_runs"]))
    assert out["ratio_vs_reference"] == pytest.approx(sum(paired) / 2)  # median of the paired ratios
    assert main(["bench", "--spec", quickstart, "--size", "12m"]) == 2
    assert "--size: expected one of the spec's sizes" in capsys.readouterr().err


def test_bench_rejects_a_bad_k_list(capsys):
    from scaling.cli import main

    assert main(["bench", "--k", "1,x"]) == 2
    assert "--k" in capsys.readouterr().err


def test_overflowing_logits_fall_back_to_the_max_shifted_softmax():
    from scaling.train.stacked_ops import head_cross_entropy

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 4, generator=gen) * 40  # logits far beyond exp's float32 range
    x[0, 0] = 100.0
    targets = torch.randint(0, 7, (2, 6), generator=gen)
    w_fused = torch.randn(2, 4, 7, generator=gen).requires_grad_()
    w_plain = w_fused.detach().double().requires_grad_()
    fused = head_cross_entropy(x, w_fused, targets)
    plain = torch.stack([torch.nn.functional.cross_entropy(x[k].double() @ w_plain[k], targets[k]) for k in range(2)])
    assert torch.isfinite(fused).all()
    assert fused.double().detach() == pytest.approx(plain.detach(), rel=1e-5)
    fused.sum().backward()
    plain.sum().backward()
    assert torch.allclose(w_fused.grad.double(), w_plain.grad, atol=1e-4)


def test_the_bf16_autocast_path_trains(tokens):
    """The GPU path (bf16 autocast, real-valued rotary) exercised on CPU: close to fp32, finite."""
    from scaling.train.stacked import StackedRun

    train, _ = tokens
    configs = [tiny(decay=0.0), tiny(decay=1.0)]
    exact = StackedRun(configs, train, VOCAB, torch.device("cpu"))
    mixed = StackedRun(configs, train, VOCAB, torch.device("cpu"))
    mixed.autocast = torch.bfloat16
    for step in range(3):
        [(_, a)], [(_, b)] = exact.train_step(step, 1e-2), mixed.train_step(step, 1e-2)
        assert b == pytest.approx(a, rel=2e-2)
    assert torch.isfinite(mixed.model.flat).all() and mixed.errors == [None, None]


def test_pipeline_batched_records_a_divergence_instead_of_raising():
    configs = [tiny(decay=0.1, context=32, tokens=32 * 4 * 3), tiny(decay=1e6, context=32, tokens=32 * 4 * 3)]
    ok, bad = run_pipeline_batched(configs)
    assert "error" not in ok and "qk_rank" in ok
    assert bad["diverged_phase"] == "pretraining" and "qk_rank" not in bad
    assert bad["decay"] == 1e6 and isinstance(bad["curve"], list) and bad["wall_s"] >= 0


def test_losses_read_back_in_chunks_as_on_a_gpu_change_nothing_but_timing(tokens, monkeypatch):
    """On a GPU the losses come back every few steps (no per-step sync); simulated on CPU, every
    loss, the divergence step and the surviving model's result must be what per-step reading gives."""
    import scaling.train.loop

    train, val = tokens
    configs = [tiny(decay=0.1), tiny(decay=1e6)]
    per_step: list = []
    expected = pretrain_batched(configs, train, val, VOCAB, on_step=lambda s, losses: per_step.append((s, losses)))
    with pytest.raises(TrainingDiverged) as alone:
        pretrain(configs[1], train, val, VOCAB)
    monkeypatch.setattr(scaling.train.loop, "readback_interval", lambda device: 4)
    chunked: list = []
    got = pretrain_batched(configs, train, val, VOCAB, on_step=lambda s, losses: chunked.append((s, losses)))
    assert [s for s, _ in chunked] == [s for s, _ in per_step]
    assert [losses[0] for _, losses in chunked] == [losses[0] for _, losses in per_step]
    assert got[0].metrics["val_loss"] == expected[0].metrics["val_loss"]
    assert got[1].error.step == expected[1].error.step == alone.value.step
    with pytest.raises(TrainingDiverged) as late:
        pretrain(configs[1], train, val, VOCAB)
    assert late.value.step == alone.value.step
    single: list = []
    pretrain(configs[0], train, val, VOCAB, on_step=lambda s, loss: single.append(s))
    assert single == list(range(len(per_step)))
