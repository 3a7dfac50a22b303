"""The stacked step under torch.compile: one graph (no breaks, so CUDA graphs can capture it),
the same losses and gradients as eager up to float rounding, and a study unit that compiles
gives the eager unit's results."""

import pytest
import torch

from scaling.config import RunConfig, model_shape
from scaling.train.stacked_model import StackedGPT


def stacked(seeds=(0, 1), size="13k", context=32):
    cfg = RunConfig(size=size, context=context)
    return StackedGPT.from_seeds(model_shape(cfg), 258, context, list(seeds), torch.device("cpu"))


def batch(k=2, b=4, t=32, seed=0):
    return torch.randint(0, 258, (k, b, t + 1), generator=torch.Generator().manual_seed(seed))


def test_the_stacked_forward_traces_as_one_graph_without_breaks():
    import torch._dynamo as dynamo

    model, idx = stacked(), batch()
    explained = dynamo.explain(model.losses)(idx[..., :-1], idx[..., 1:])
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


@pytest.mark.slow
def test_compiled_losses_and_gradients_equal_eager_for_every_model_of_that_shape():
    """One compile serves every stacked model of a shape (no recompile per unit), and each gets
    its own results, not the first model's."""
    from torch._dynamo.utils import counters

    idx = batch()
    compiled_graphs, compiled_losses = [], []
    for seeds in ((0, 1), (5, 6)):
        eager, compiled = stacked(seeds), stacked(seeds)
        eager.real_rotary = True  # what compile uses (no complex codegen)
        results = []
        for model, fn in ((eager, eager.losses), (compiled, torch.compile(compiled.losses, dynamic=False,
                                                                          fullgraph=True))):
            model.grad.zero_()
            losses = fn(idx[..., :-1], idx[..., 1:])
            losses.sum().backward()
            results.append((losses.detach(), model.grad.clone()))
        (l_eager, g_eager), (l_comp, g_comp) = results
        torch.testing.assert_close(l_comp, l_eager, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(g_comp, g_eager, rtol=1e-4, atol=1e-6)
        compiled_graphs.append(counters["stats"]["unique_graphs"])
        compiled_losses.append(l_comp)
    assert compiled_graphs[1] == compiled_graphs[0]  # the second model reused the first compile
    assert not torch.allclose(compiled_losses[0], compiled_losses[1])  # with its own weights
