"""The demo's supervision of its children (real short-lived processes) and its waits on the log's offsets."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from archive.segments import Segment, segment_key
from events.errors import HarmonyError
from harmony.demo import archived_through, behind, wait_until_covered
from harmony.supervisor import Backoff, ChildFailed, Supervisor

QUICK = Backoff(first=0.05, cap=0.2, stable=10.0, attempts=5)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def starts(log_path: Path) -> int:
    """Each child used here prints one line when it starts."""
    return log_path.read_text().count("started")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def watch_until(supervisor: Supervisor, predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "timed out"
        supervisor.watch(0.05)
    return value


@pytest.fixture
def supervisor():
    supervisor = Supervisor(QUICK, stop_timeout=2.0)
    yield supervisor
    supervisor.stop()


# -- restarts and backoff --------------------------------------------------------------------------


def test_the_pause_before_a_restart_doubles_up_to_the_cap():
    backoff = Backoff(first=1.0, cap=30.0)
    assert [backoff.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_a_child_that_keeps_exiting_quickly_is_given_up_on_naming_it_and_its_log(supervisor, tmp_path):
    log_path = tmp_path / "worker.log"
    began = time.monotonic()
    supervisor.start("worker", python("print('started', flush=True); raise SystemExit(3)"), log_path)
    with pytest.raises(ChildFailed) as failed:
        supervisor.watch(30)
    assert starts(log_path) == 5  # four restarts, then the fifth quick exit is the last
    assert time.monotonic() - began >= 0.05 + 0.1 + 0.2 + 0.2  # the pauses, doubled and capped
    message = str(failed.value)
    assert "the worker exited 5 times in a row" in message and "exit code 3" in message
    assert str(log_path) in message


def test_a_killed_child_is_restarted_with_a_new_pid_and_a_structured_warning(supervisor, tmp_path, caplog):
    log_path = tmp_path / "api.log"
    supervisor.start("api", python("import time; print('started', flush=True); time.sleep(60)"), log_path)
    first = supervisor.pid("api")
    watch_until(supervisor, lambda: starts(log_path) == 1)
    with caplog.at_level(logging.WARNING, logger="harmony.supervisor"):
        os.kill(first, signal.SIGKILL)
        second = watch_until(supervisor, lambda: supervisor.pid("api") not in (None, first) and supervisor.pid("api"))
    assert alive(second) and not alive(first)
    watch_until(supervisor, lambda: starts(log_path) == 2)
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert (warning.child, warning.pid, warning.exit, warning.quick_exits) == ("api", first, "killed by SIGKILL", 1)
    assert warning.log == str(log_path)


def test_a_child_that_stayed_up_long_enough_starts_counting_again(tmp_path):
    supervisor = Supervisor(Backoff(first=0.05, cap=0.2, stable=0.3, attempts=2), stop_timeout=2.0)
    log_path = tmp_path / "archiver.log"
    supervisor.start("archiver", python("import time; print('started', flush=True); time.sleep(0.4); "
                                        "raise SystemExit(1)"), log_path)
    try:
        supervisor.watch(3)  # two exits in a row would give up, were they quick
    finally:
        supervisor.stop()
    assert starts(log_path) >= 3


def test_children_run_in_sessions_of_their_own(supervisor, tmp_path):
    """So a terminal's Ctrl-C, sent to the demo's process group, does not reach them."""
    supervisor.start("worker", python("import time; time.sleep(60)"), tmp_path / "worker.log")
    pid = supervisor.pid("worker")
    assert os.getsid(pid) == pid and os.getpgid(pid) != os.getpgid(0)


# -- stopping ---------------------------------------------------------------------------------------


def test_stop_terminates_children_and_kills_those_that_ignore_sigterm_with_what_they_started(tmp_path):
    supervisor = Supervisor(QUICK, stop_timeout=1.0)
    grandchild = tmp_path / "grandchild.pid"
    supervisor.start("polite", python("import time; time.sleep(60)"), tmp_path / "polite.log")
    supervisor.start("stubborn", python(
        "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(grandchild)!r}, 'w').write(str(p.pid)); time.sleep(60)"), tmp_path / "stubborn.log")
    pids = [supervisor.pid("polite"), supervisor.pid("stubborn")]
    watch_until(supervisor, lambda: grandchild.exists() and grandchild.read_text())
    began = time.monotonic()
    supervisor.stop()
    assert time.monotonic() - began < 5
    assert [child.process.returncode for child in supervisor.children.values()] == [-signal.SIGTERM,
                                                                                     -signal.SIGKILL]
    assert not any(alive(pid) for pid in pids)
    pid = int(grandchild.read_text())
    deadline = time.monotonic() + 5  # reparented: init reaps it
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)


def test_a_one_off_step_runs_to_its_end_while_the_children_are_kept_running(supervisor, tmp_path):
    log_path = tmp_path / "worker.log"
    supervisor.start("worker", python("import time; print('started', flush=True); time.sleep(0.2); "
                                      "raise SystemExit(1)"), log_path)
    assert supervisor.run(python("import time; time.sleep(1.5); raise SystemExit(7)")) == 7
    assert starts(log_path) >= 2


def test_an_interrupted_step_is_stopped(supervisor, tmp_path):
    pid_file = tmp_path / "step.pid"

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        with pytest.raises(KeyboardInterrupt):
            supervisor.run(python(f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
                                  "time.sleep(60)"))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert not alive(int(pid_file.read_text()))


# -- waiting on offsets -----------------------------------------------------------------------------


def test_behind_counts_the_records_each_partition_lacks():
    assert behind({0: 9, 1: 4, 2: 0}, {0: 9, 1: 1}) == {1: 3, 2: 1}
    assert behind({0: 9}, {0: 12}) == {}


def test_a_wait_returns_once_every_partition_reaches_its_last_offset(tmp_path):
    positions = iter([{}, {0: 3}, {0: 3, 1: 1}, {0: 5, 1: 2}])
    seen = []
    wait_until_covered("the worker", {0: 5, 1: 2}, lambda: next(positions), watch=lambda s: None,
                       log_path=tmp_path / "w.log", stall=60, interval=0, progress=seen.append)
    assert seen == [9, 5, 3]


def test_a_wait_that_stalls_names_what_is_behind_by_how_much(tmp_path):
    began = time.monotonic()
    with pytest.raises(HarmonyError) as stalled:
        wait_until_covered("the archiver", {0: 99, 1: 1499, 2: 5}, lambda: {0: 99, 1: 499, 2: 2},
                           watch=time.sleep, log_path=tmp_path / "a.log", stall=0.3, interval=0.05)
    assert 0.3 <= time.monotonic() - began < 5
    assert str(stalled.value) == (f"the archiver is 1,003 records behind the log (partition 1: 1,000, "
                                  f"partition 2: 3) and has not moved for 0.3s; see its log {tmp_path / 'a.log'}")


def test_a_wait_that_keeps_progressing_does_not_give_up(tmp_path):
    done = {"n": 0}

    def position():
        done["n"] += 1
        return {0: done["n"]}

    wait_until_covered("the worker", {0: 30}, position, watch=time.sleep, log_path=tmp_path / "w.log",
                       stall=0.1, interval=0.01)  # 0.3 s in all: longer than the stall, never stalled


def segments(*ranges: tuple[int, int]) -> list[Segment]:
    return [Segment(0, first, last, segment_key("t", 0, first, last)) for first, last in ranges]


def test_the_archive_covers_a_partition_only_as_far_as_it_has_no_hole():
    assert archived_through([], 0) == -1
    assert archived_through(segments((0, 9), (10, 19)), 0) == 19
    assert archived_through(segments((0, 9), (20, 29)), 0) == 9  # 10..19 still uploading
    assert archived_through(segments((10, 19)), 0) == -1
    assert archived_through(segments((0, 14), (5, 19), (20, 20)), 0) == 20  # overlaps after a rebalance
    assert archived_through(segments((0, 9), (10, 19)), 5) == 19  # the broker deleted 0..4
    assert archived_through(segments((20, 29)), 20) == 29
