"""CoalescedScan: threads that want a process scan at once share one, and
none gets a scan that started before it asked (devcloud/guests.py)."""

from __future__ import annotations

import threading
import time

import pytest

from rally_metadata_plugin.devcloud.guests import CoalescedScan


class SlowScan:
    """A scan taking ``seconds``, returning the number of scans started before it."""

    def __init__(self, seconds: float = 0.1) -> None:
        self.seconds = seconds
        self.started = 0
        self.lock = threading.Lock()

    def __call__(self) -> dict[str, list[int]]:
        with self.lock:
            self.started += 1
            mine = self.started
        time.sleep(self.seconds)
        return {"scan": [mine]}


def test_threads_asking_at_once_share_scans():
    scan = SlowScan()
    shared = CoalescedScan(scan)
    results = []
    threads = [threading.Thread(target=lambda: results.append(shared()))
               for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 20
    assert scan.started <= 3          # not 20


def test_a_caller_never_gets_a_scan_that_started_before_it_asked():
    scan = SlowScan(0.2)
    shared = CoalescedScan(scan)
    first = threading.Thread(target=shared)
    first.start()
    time.sleep(0.05)                  # the first scan is under way
    asked_after = scan.started
    assert shared() == {"scan": [asked_after + 1]}
    first.join()


def test_a_lone_caller_scans_every_time():
    scan = SlowScan(0)
    shared = CoalescedScan(scan)
    assert [shared(), shared()] == [{"scan": [1]}, {"scan": [2]}]


def test_a_failed_scan_is_not_shared_and_the_next_caller_scans_again():
    calls = []

    def scan():
        calls.append(1)
        if len(calls) == 1:
            raise OSError("boom")
        return {"ok": [1]}

    shared = CoalescedScan(scan)
    with pytest.raises(OSError):
        shared()
    assert shared() == {"ok": [1]}
