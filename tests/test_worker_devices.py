"""One study worker per GPU, each pinned to its own: the placement, decided without a GPU."""

import os

import pytest

from scaling.study import load_spec
from scaling.study import runner
from scaling.study.runner import default_workers, visible_gpus, worker_gpus

SPEC = """
name = "gpus"
sizes = ["13k"]
budgets = {{ tokens = [20000] }}
seeds = [0]
tasks = ["arithmetic"]

[decay]
grid = [0, 0.1]

[run]
{device}
"""


def spec(tmp_path, device_line=""):
    path = tmp_path / "gpus.toml"
    path.write_text(SPEC.format(device=device_line))
    return load_spec(path)


def test_each_worker_gets_its_own_gpu():
    assert worker_gpus(4, ["0", "1", "2", "3"]) == ["0", "1", "2", "3"]


def test_more_workers_than_gpus_share_them_evenly():
    assert worker_gpus(5, ["0", "1"]) == ["0", "1", "0", "1", "0"]


def test_no_gpus_pins_nothing():
    assert worker_gpus(3, []) == [None, None, None]


def test_visible_gpus_follow_an_existing_cuda_visible_devices():
    assert visible_gpus(4, None) == ["0", "1", "2", "3"]
    assert visible_gpus(2, "5, 7") == ["5", "7"]
    assert visible_gpus(1, "GPU-8f1c,GPU-22ab") == ["GPU-8f1c"]
    assert visible_gpus(0, None) == []


def test_default_workers_is_one_per_gpu_on_a_cuda_machine(monkeypatch, tmp_path):
    monkeypatch.setattr(runner, "cuda_device_count", lambda: 4)
    monkeypatch.setattr(runner, "cpu_threads", lambda: 16)
    assert default_workers(spec(tmp_path)) == 4
    assert default_workers(spec(tmp_path, 'device = "cpu"')) == 16  # a CPU study ignores the GPUs
    monkeypatch.setattr(runner, "cuda_device_count", lambda: 0)
    assert default_workers(spec(tmp_path)) == 16


def test_a_worker_process_pins_its_gpu_before_it_runs(monkeypatch, tmp_path):
    seen = {}

    def fake_worker(*args, **kwargs):
        seen["gpu"] = os.environ.get("CUDA_VISIBLE_DEVICES")
        return runner.WorkerResult(index=kwargs["index"])

    monkeypatch.setattr(runner, "run_worker", fake_worker)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")  # restored after the test
    with pytest.raises(SystemExit) as done:
        runner._worker_main(spec(tmp_path), "sqlite://", 2, None, False, 1, None, "2")
    assert done.value.code == 0 and seen["gpu"] == "2"
