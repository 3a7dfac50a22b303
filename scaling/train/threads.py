"""CPU threads for K independent models: one contiguous group of models per thread."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch


def group_bounds(k: int, device: torch.device, compile: bool) -> list[tuple[int, int]]:
    """Split K models into one contiguous group per CPU thread.

    On CPU the models are independent work, so each group runs forward and backward on its own
    thread with single-threaded kernels, instead of OpenMP splitting every small kernel, which
    scales poorly at these sizes and collapses when the machine is shared. One group (the stacked
    model as a whole) on GPU, with compile, or with one thread."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or compile or threads <= 1 or k <= 1:
        return [(0, k)]
    groups = min(k, threads)
    edges = [round(i * k / groups) for i in range(groups + 1)]
    return list(zip(edges[:-1], edges[1:]))


_POOL: Any = None
_POOL_SIZE = 0


def map_threads(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """fn over items, one item per thread, kernels single-threaded inside (see `group_bounds`)."""
    global _POOL, _POOL_SIZE
    if len(items) == 1:
        return [fn(items[0])]
    from concurrent.futures import ThreadPoolExecutor

    if _POOL is None or _POOL_SIZE < len(items):
        if _POOL is not None:
            _POOL.shutdown(wait=False)
        _POOL, _POOL_SIZE = ThreadPoolExecutor(max_workers=len(items), thread_name_prefix="scaling-batched"), len(items)

    def single_threaded(item: Any) -> Any:
        if torch.get_num_threads() != 1:  # per thread; the caller's setting is untouched
            torch.set_num_threads(1)
        return fn(item)

    return list(_POOL.map(single_threaded, items))
