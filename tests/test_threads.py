"""Thread settings: the usable cores, and how training applies the configured count."""

import os

import pytest

from forecaster import threads


@pytest.mark.parametrize(
    "text, quota", [("max 100000\n", None), ("200000 100000\n", 2.0), ("150000 100000", 1.5), ("garbage", None)]
)
def test_cpu_quota_from_cgroup(tmp_path, text, quota):
    p = tmp_path / "cpu.max"
    p.write_text(text)
    assert threads.cpu_quota(p) == quota
    assert threads.cpu_quota(tmp_path / "missing") is None


def test_usable_cores_follow_affinity_and_quota(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(threads, "cpu_quota", lambda path=None: None)
    assert threads.usable_cores() == 4
    monkeypatch.setattr(threads, "cpu_quota", lambda path=None: 1.5)
    assert threads.usable_cores() == 2  # a quota of 1.5 cores still runs on 2
    monkeypatch.setattr(threads, "cpu_quota", lambda path=None: 0.2)
    assert threads.usable_cores() == 1


@pytest.mark.parametrize("count, cores", [(6, 6), (None, 1)])
def test_usable_cores_fall_back_to_the_cpu_count_without_an_affinity(monkeypatch, count, cores):
    """Where there is no CPU affinity to read (macOS, Windows) the cores are the machine's count,
    or one when even that is unknown, still capped by a quota."""
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: count)
    monkeypatch.setattr(threads, "cpu_quota", lambda path=None: None)
    assert threads.usable_cores() == cores
    monkeypatch.setattr(threads, "cpu_quota", lambda path=None: 2.5)
    assert threads.usable_cores() == min(cores, 3)


@pytest.mark.parametrize("threads", [1, 2, 0])
def test_training_uses_the_configured_threads(threads, monkeypatch):
    import torch

    from forecaster.training import set_threads

    monkeypatch.setattr("forecaster.training.usable_cores", lambda: 3)
    before = torch.get_num_threads()
    try:
        set_threads(threads)
        assert torch.get_num_threads() == (threads or 3)
    finally:
        torch.set_num_threads(before)


def test_more_threads_than_cores_are_cut_to_the_cores_with_a_warning(monkeypatch, caplog):
    """A team of threads larger than the cores waits on itself: --threads 1000 on two cores
    trained hundreds of times slower than one thread, without a word."""
    import torch

    from forecaster.training import set_threads

    monkeypatch.setattr("forecaster.training.usable_cores", lambda: 2)
    before = torch.get_num_threads()
    try:
        with caplog.at_level("WARNING", logger="forecaster"):
            set_threads(1000)
        assert torch.get_num_threads() == 2
        assert [r.getMessage() for r in caplog.records] == [
            "train.threads (--threads) is 1000, more than the 2 cores this process may use: it trains on 2"
        ]
    finally:
        torch.set_num_threads(before)


def test_one_thread_is_the_default():
    from forecaster.config import Config

    assert Config().train.threads == 1
