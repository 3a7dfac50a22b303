"""Checks, before a run trains, of everything it will read: a bad input fails in seconds, not
after a pretraining."""

from __future__ import annotations

from collections.abc import Sequence

from scaling.config import RunConfig


def check_inputs(configs: Sequence[RunConfig]) -> None:
    """Everything the configs' runs read before they train, checked once: the device, the corpus
    with its tokenizer, held-out documents for the probe, and every task (each `jsonl:` file
    parsed). Raises the ScalingError (one line) a run would hit later, after its pretraining."""
    from scaling.data.tasks import get_task
    from scaling.data.tokens import load_pretrain_data
    from scaling.errors import DataError
    from scaling.train.loop import resolve_device

    checked: set[tuple[object, ...]] = set()
    for config in configs:
        if ("device", config.device) not in checked:
            resolve_device(config.device)
            checked.add(("device", config.device))
        data = load_pretrain_data(config.corpus, config.tokenizer)  # cached: the runs reuse it
        if config.probes and not data.heldout_docs and ("probe", data.corpus_name) not in checked:
            raise DataError(f"corpus {data.corpus_name}: no held-out documents for the linear probe (a "
                            f"pre-tokenized corpus has none); expected a text corpus, or probes = false")
        checked.add(("probe", data.corpus_name))
        for task in config.tasks:
            key = ("task", config.corpus, config.tokenizer, task)
            if key not in checked:
                get_task(task, data.tokenizer, data.heldout_docs, seed=config.seed)
                checked.add(key)
