"""The metadata service says when it answered nothing for a while.

Under overload the metadata server process waits for a CPU, and every
guest's probe then fails on this machine, not on the cloud model. A
heartbeat in its event loop records each stall of ``STALL_SECONDS`` or more,
in the log and in the state directory's ``metadata-stalls.jsonl``. A stall
is made here the way an overload makes it: the process gets no CPU
(SIGSTOP) for a while.
"""

from __future__ import annotations

import json
import os
import signal
import time
from types import SimpleNamespace

import pytest

from rally_metadata_plugin.devcloud import boottime
from rally_metadata_plugin.devcloud.metadata import STALL_LOG, STALL_SECONDS, MetadataService, read_stalls


@pytest.fixture
def service(tmp_path):
    backend = SimpleNamespace(migrations=SimpleNamespace())
    service = MetadataService(backend, stall_log=tmp_path / STALL_LOG)
    try:
        yield service
    finally:
        service.stop()


def _wait_for(predicate, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def _stopped_for(pid: int, seconds: float) -> float:
    before = boottime.now()
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)
    return before


def test_a_process_without_cpu_is_recorded_as_a_stall(service, tmp_path):
    before = _stopped_for(service.pid, 1.5)
    assert _wait_for(lambda: any(seconds >= 1.3 for _, seconds in service.stats()["stalls"]))
    start, seconds = max(service.stats()["stalls"], key=lambda stall: stall[1])
    assert before - 0.2 <= start <= before + 0.5, (before, start)
    assert seconds <= 1.5 + 0.5
    lines = [json.loads(line) for line in (tmp_path / STALL_LOG).read_text().splitlines()]
    assert {"start": round(start, 3), "seconds": round(seconds, 3)} in lines
    assert max(read_stalls(tmp_path)) == round(seconds, 3)


def test_a_process_that_answers_in_time_records_nothing(service, tmp_path):
    for _ in range(10):
        _stopped_for(service.pid, STALL_SECONDS / 4)
        time.sleep(0.05)
    service.sync()
    assert [s for _, s in service.stats()["stalls"] if s >= STALL_SECONDS + 0.3] == []
    assert all(seconds < STALL_SECONDS + 0.3 for seconds in read_stalls(tmp_path))
