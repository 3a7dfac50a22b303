"""Synthetic token streams shared by trainer tests."""

import numpy as np

VOCAB = 258


def pattern_tokens(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) int64 tokens with structure (a noisy repeating pattern), so losses move in a
    few steps."""
    rng = np.random.default_rng(seed)
    train = (np.tile(np.arange(200) % 97, 150) + rng.integers(0, 3, 30000)) % VOCAB
    val = (np.tile(np.arange(200) % 97, 20) + rng.integers(0, 3, 4000)) % VOCAB
    return train.astype(np.int64), val.astype(np.int64)
