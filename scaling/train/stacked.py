"""K models of one shape, differing only in decay and seed, trained together as one stacked model.

Model k starts from the weights `GPT` gets under `torch.manual_seed(seed_k)`, sees the batches
`pretrain` feeds it and gets the same AdamW arithmetic with its own decay and gradient clip, so
results match K separate `pretrain` runs up to float rounding (tests/test_batched.py). A model
that diverges is frozen at zero weights (`StackedAdamW.kill`) and the others train on. Metrics
differ from `pretrain`'s only in timing: `train_s` is the shared wall time, and `batch_models`
(K) and `batch_tokens_per_s` (all K together) are added. Throughput: docs/performance.md.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from scaling.config import RunConfig
from scaling.errors import ConfigError
from scaling.train.loop import LossReadback, PretrainResult, Run, full_run, progress_bar, resolve_device, to_device
from scaling.train.stacked_model import StackedAdamW, StackedGPT
from scaling.train.threads import group_bounds, map_threads

_ALLOCATOR_TUNED = False


def tune_cpu_allocator() -> bool:
    """Keep freed memory in the process heap (glibc: no mmap for large blocks, no trimming).

    The stacked model's activations are tens of MB; glibc serves blocks above its mmap threshold
    with fresh mmap pages, so every step would pay a page fault per 4 KB of every large tensor.
    Process-wide; memory is reused instead of returned to the OS. No-op (False) where glibc is not
    the allocator."""
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        _ALLOCATOR_TUNED = bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        _ALLOCATOR_TUNED = False
    return _ALLOCATOR_TUNED


def compiled_losses(model: StackedGPT) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """`model.losses` under torch.compile, as one graph (`fullgraph`: a graph break is an error,
    not a silent slowdown). On CUDA in "reduce-overhead" mode, which replays the forward and the
    backward as CUDA graphs: one launch each instead of one per kernel, the point for small models
    whose steps are launch-bound. The weights are marked static so the graphs read them in place
    rather than copying them in before each replay. One compile serves every model of a shape
    and K (tests/test_compile.py)."""
    if model.device.type == "cuda":
        for tensor in (model.flat, *model.params.values()):
            torch._dynamo.mark_static_address(tensor)
        return torch.compile(model.losses, dynamic=False, fullgraph=True, mode="reduce-overhead")
    return torch.compile(model.losses, dynamic=False, fullgraph=True)


# The only RunConfig fields the models of one batch may differ in.
STACKABLE_FIELDS = ("decay", "seed")


def check_stackable(configs: Sequence[RunConfig]) -> None:
    """Raise ConfigError unless the configs share every field but decay and seed."""
    if not configs:
        raise ConfigError("configs: expected at least one run config to train")
    base = configs[0].to_dict()
    for i, cfg in enumerate(configs[1:], start=1):
        other = cfg.to_dict()
        for key, value in base.items():
            if key not in STACKABLE_FIELDS and other[key] != value:
                raise ConfigError(f"configs[{i}].{key}: batched runs must share everything but decay and seed; "
                                  f"expected {value!r} (as configs[0]), got {other[key]!r}")


class StackedRun(Run):
    """K models in training as one `StackedGPT` and `StackedAdamW`. `clone()` copies weights and
    optimizer state, so a cooldown branch can continue from any step."""

    stacked = True

    def __init__(self, configs: Sequence[RunConfig], train_tokens: np.ndarray, vocab_size: int,
                 device: torch.device, compile: bool = False, split: bool = True):
        check_stackable(configs)
        super().__init__(configs, train_tokens, vocab_size, device)
        if device.type == "cpu":
            tune_cpu_allocator()
        seeds = [c.seed for c in self.configs]
        self.model = StackedGPT.from_seeds(self.shape, vocab_size, self.configs[0].context, seeds, device)
        self.optimizer = StackedAdamW(self.model, self.configs)
        self.compile = compile
        self.split = split  # False: one group, even on several threads (a caller runs the groups)
        self._set_model(self.model)

    def _set_model(self, model: StackedGPT) -> None:
        """Use `model`, split into one group of models per CPU thread (see `group_bounds`)."""
        self.model = model
        bounds = group_bounds(model.k, self.device, self.compile) if self.split else [(0, model.k)]
        self.groups = [(a, b, model if b - a == model.k else model.rows(a, b)) for a, b in bounds]
        self._losses = compiled_losses(model) if self.compile else model.losses

    def _forward_backward(self, model: StackedGPT, losses_fn: Callable[..., torch.Tensor],
                          batch: torch.Tensor) -> torch.Tensor:
        # zeroed here, on the group's own thread: an (K, P) fill on the calling thread would
        # start OpenMP workers that then spin on the cores the groups run on
        model.grad.zero_()
        graphed = self.compile and self.device.type == "cuda"
        if graphed:
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs may be overwritten
        with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            losses = losses_fn(batch[..., :-1], batch[..., 1:])
        losses.sum().backward()
        # a CUDA graph's output is overwritten by its next replay; the readback keeps several steps
        return losses.detach().clone() if graphed else losses.detach()

    def forward_backward(self, step: int) -> torch.Tensor:
        batch = self.batch(step)
        if len(self.groups) == 1:
            return self._forward_backward(self.model, self._losses, batch)
        parts = [(model, model.losses, batch if self.shared_data else batch[a:b]) for a, b, model in self.groups]
        return torch.cat(map_threads(lambda part: self._forward_backward(*part), parts))

    def update(self, lr: float) -> None:
        self.optimizer.step(lr, [(a, b) for a, b, _ in self.groups])

    def kill(self, k: int) -> None:
        """Freeze model k (`StackedAdamW.kill`): its row stays finite and the others are untouched.
        On a GPU that happens up to `readback_interval - 1` steps late: its own row may hold
        non-finite values meanwhile, which nothing mixes into the other models' rows."""
        self.optimizer.kill(k)

    def extract(self, k: int):
        return self.model.extract(k)

    @torch.no_grad()
    def evaluate(self, windows: np.ndarray, batch_size: int = 32) -> list[float]:
        """Per-model mean loss over windows (n, T+1) shared, or (K, n, T+1) per model; chunked as
        `single.evaluate_loss` does, so each model's number equals what it would report alone."""
        shared = windows.ndim == 2
        n = windows.shape[0] if shared else windows.shape[1]

        def group_totals(group: tuple[int, int, StackedGPT]) -> torch.Tensor:
            a, b, model = group
            total = torch.zeros(b - a, dtype=torch.float64)
            for start in range(0, n, batch_size):
                chunk = windows[start:start + batch_size] if shared else windows[a:b, start:start + batch_size]
                x = to_device(np.asarray(chunk, dtype=np.int64), self.device)
                with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
                    losses = model.losses(x[..., :-1], x[..., 1:])
                total += losses.double().cpu() * chunk.shape[-2]
            return total

        total = torch.cat(map_threads(group_totals, self.groups))
        return (total / max(n, 1)).tolist()

    def clone(self) -> "StackedRun":
        """An independent copy (weights, optimizer state, liveness, curves) to branch from."""
        self.sync()
        other = StackedRun.__new__(StackedRun)
        other.__dict__.update(self.__dict__)
        model = StackedGPT(self.shape, self.vocab_size, self.configs[0].context, self.k, self.device)
        with torch.no_grad():
            model.flat.copy_(self.model.flat)
        other._set_model(model)
        opt = StackedAdamW.__new__(StackedAdamW)
        opt.__dict__.update(self.optimizer.__dict__)
        opt.model = model
        for name in ("exp_avg", "exp_avg_sq", "alive", "weight_decay"):
            setattr(opt, name, getattr(self.optimizer, name).clone())
        other.optimizer = opt
        other.readback = LossReadback(self.readback.every)
        other.errors = list(self.errors)
        other.curves = [list(c) for c in self.curves]
        other.recent = [list(r) for r in self.recent]
        return other


def pretrain_batched(configs: Sequence[RunConfig], train_tokens: np.ndarray, val_tokens: np.ndarray,
                     vocab_size: int, progress: bool = False, device: torch.device | None = None,
                     compile: bool = False,
                     on_step: Callable[[int, list[float]], None] | None = None) -> list[PretrainResult]:
    """Train one model per config together; configs may differ only in decay and seed.

    Returns one `PretrainResult` per config, in order (a diverged model has `error` set and no
    model). `compile=True` wraps the forward in `torch.compile`. On several CPU threads each group
    of models (`group_bounds`) trains start to finish on its own thread; `on_step(step, losses)`
    is then called once all groups are done, in step order; otherwise as losses are read back.
    """
    from scaling.data.tokens import eval_windows

    check_stackable(configs)
    cfg = configs[0]
    device = device or resolve_device(cfg.device)
    val_windows = eval_windows(val_tokens, cfg.eval_tokens, cfg.context)
    groups = group_bounds(len(configs), device, compile)

    # built here, one after the other: model init seeds the global RNG (`StackedGPT.from_seeds`)
    runs = [StackedRun(configs[a:b], train_tokens, vocab_size, device, compile=compile, split=False)
            for a, b in groups]
    steps = runs[0].budget()[0]
    bar = progress_bar(progress, steps, f"pretrain {cfg.size or runs[0].shape.d_model} x{len(configs)}")

    if len(runs) == 1:
        (run,) = runs
        steps, n_tokens, train_time = full_run(run, val_windows, on_step, bar)
        results = run.results(configs, steps, n_tokens, train_time, val_windows)
    else:
        logs: list[list[tuple[int, list[float]]]] = [[] for _ in runs]
        done = map_threads(lambda i: full_run(runs[i], val_windows, lambda step, losses: logs[i].append((step, losses)),
                                              bar if i == 0 else None), range(len(runs)))
        steps, n_tokens = done[0][0], done[0][1]
        # the groups ran side by side: the batch took as long as its slowest group
        train_time = max(t for _, _, t in done)
        results = []
        for (a, b), run in zip(groups, runs):
            results += run.results(configs[a:b], steps, n_tokens, train_time, val_windows, k_total=len(configs))
        if on_step is not None:
            by_step: dict[int, list[float]] = {}
            for log in logs:
                for step, losses in log:
                    by_step.setdefault(step, []).extend(losses)
            for step in sorted(by_step):
                on_step(step, by_step[step])
    if bar is not None:
        bar.close()
    return results

