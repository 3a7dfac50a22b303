import os

import pytest
import torch

# Two cores are shared by the whole suite: one torch thread per test process keeps timings sane
# and results reproducible.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Token caches go to one temporary folder per test session, never to ~/.cache."""
    if "SCALING_CACHE_DIR" not in os.environ:
        monkeypatch.setenv("SCALING_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def one_thread():
    """One torch thread for the test, restoring the caller's count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
