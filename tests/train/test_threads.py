"""How many torch threads a run takes: the cores left after loader workers and what other programs use now."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from openjepa import runtime
from openjepa.runtime import busy_cpus, configure_threads, cpu_busy_between, other_load

STAT_BEFORE = """cpu  300 0 100 1000 50 0 0 0 0 0
cpu0 100 0 50 500 20 0 0 0 0 0
cpu1 200 0 50 500 30 0 0 0 0 0
intr 12345
"""
# cpu0: +90 busy of +100 ticks; cpu1: +10 busy (user) +10 iowait of +100 (iowait is idle, not busy).
STAT_AFTER = """cpu  400 0 100 1180 60 0 0 0 0 0
cpu0 190 0 50 510 20 0 0 0 0 0
cpu1 210 0 50 580 40 0 0 0 0 0
intr 23456
"""


def test_busy_between_snapshots_is_the_sum_of_each_cpus_busy_share(tmp_path: Path) -> None:
    before = runtime._read_cpu_times(_write(tmp_path / "a", STAT_BEFORE), [0, 1])
    after = runtime._read_cpu_times(_write(tmp_path / "b", STAT_AFTER), [0, 1])
    assert before == {0: (150, 670), 1: (250, 780)}
    assert cpu_busy_between(before, after) == pytest.approx(0.9 + 0.1)
    # Only the CPUs this process may run on count.
    only_cpu1 = runtime._read_cpu_times(_write(tmp_path / "c", STAT_AFTER), [1])
    assert cpu_busy_between(before, only_cpu1) == pytest.approx(0.1)


def test_unreadable_or_malformed_stat_files_are_not_measurements(tmp_path: Path) -> None:
    assert runtime._read_cpu_times(str(tmp_path / "missing"), [0]) is None
    assert runtime._read_cpu_times(_write(tmp_path / "bad", "cpu0 a b c d e\n"), [0]) is None
    assert runtime._read_cpu_times(_write(tmp_path / "other", STAT_AFTER), [7]) is None  # no line for cpu7
    assert busy_cpus(0.01, stat_path=str(tmp_path / "missing")) is None


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux's /proc/stat")
def test_a_process_spinning_right_now_is_seen_at_once() -> None:
    """The 1-minute load average takes a minute to see a new busy process (and to forget an ended one)."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let it start
        assert busy_cpus(0.5) >= 0.6
        assert other_load(runtime.available_cores(), window_s=0.5) >= 1
    finally:
        spinner.kill()
        spinner.wait()


def test_threads_are_the_cores_left_after_workers_and_other_programs(monkeypatch: pytest.MonkeyPatch) -> None:
    threads_before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(runtime, "available_cores", lambda: 4)
    try:
        monkeypatch.setattr(runtime, "other_load", lambda cores: 0)
        configure_threads(num_workers=1)
        assert torch.get_num_threads() == 3
        configure_threads(num_workers=0, processes_per_node=2)
        assert torch.get_num_threads() == 2
        monkeypatch.setattr(runtime, "other_load", lambda cores: 2)
        configure_threads(num_workers=1)
        assert torch.get_num_threads() == 1
        monkeypatch.setattr(runtime, "other_load", lambda cores: 4)
        assert "1 torch thread(s)" in configure_threads(num_workers=2)  # never below one
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert configure_threads(num_workers=2) == "3 torch thread(s) (OMP_NUM_THREADS)"
    finally:
        torch.set_num_threads(threads_before)


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)
