"""Child processes kept running: one that exits is started again after a pause that doubles with each
quick exit in a row, up to a cap; a child that keeps exiting quickly is given up on (`ChildFailed`).

Each child runs in a session of its own, so a terminal's Ctrl-C reaches only the supervising
process, which decides how its children stop (`stop`).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from events.errors import HarmonyError

log = logging.getLogger(__name__)


class ChildFailed(HarmonyError):
    """A child kept exiting soon after each start."""


@dataclass(frozen=True)
class Backoff:
    first: float = 1.0  # seconds before a restart, doubling with each quick exit in a row
    cap: float = 30.0  # the longest pause
    stable: float = 60.0  # a child up this long exited for a new reason: the count starts again
    attempts: int = 5  # quick exits in a row before giving up

    def delay(self, quick_exits: int) -> float:
        return min(self.first * 2 ** max(quick_exits - 1, 0), self.cap)


class Process:
    """A command run as a child in a session of its own, its output appended to a log file. Stopping it
    signals its whole group: what it started (`harmony api --workers N` forks) stops with it."""

    def __init__(self, command: list[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None):
        self.command, self.log_path, self.env, self.cwd = command, log_path, env, cwd
        self.process: subprocess.Popen | None = None
        self.started = 0.0

    def start(self) -> "Process":
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(self.command, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.started = time.monotonic()
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, up to `timeout` seconds to exit, then SIGKILL."""
        if self.process:
            terminate([self.process], timeout)

    def kill(self) -> None:
        _signal_group(self.process, signal.SIGKILL)
        self.process.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class Child(Process):
    """A supervised child: how often it exited quickly, and when it is due to start again."""

    def __init__(self, name: str, command: list[str], log_path: Path):
        super().__init__(command, log_path)
        self.name = name
        self.quick_exits = 0  # in a row
        self.restart_at: float | None = None  # set while an exited child waits out its pause


def how_it_ended(returncode: int) -> str:
    return f"killed by {signal.Signals(-returncode).name}" if returncode < 0 else f"exit code {returncode}"


def terminate(processes: list[subprocess.Popen], timeout: float) -> None:
    """SIGTERM each running process's group, wait up to `timeout` for them all, SIGKILL the groups left.
    The processes must lead their groups (start_new_session=True): what they started stops with them."""
    for process in processes:
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            pass  # it has just exited


class Supervisor:
    def __init__(self, backoff: Backoff = Backoff(), stop_timeout: float = 30.0):
        self.backoff, self.stop_timeout = backoff, stop_timeout
        self.children: dict[str, Child] = {}

    def start(self, name: str, command: list[str], log_path: Path) -> None:
        """Run `command` as the child `name`, its output appended to `log_path`, and keep it running."""
        child = self.children[name] = Child(name, command, log_path)
        self._spawn(child)

    def pid(self, name: str) -> int | None:
        """The child's process id, None while it waits to be restarted."""
        child = self.children[name]
        return None if child.restart_at is not None else child.process.pid

    def check(self) -> None:
        """Note the children that exited and restart those whose pause is over; ChildFailed when one
        has exited quickly `backoff.attempts` times in a row."""
        now = time.monotonic()
        for child in self.children.values():
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._spawn(child)
                continue
            returncode = child.process.poll()
            if returncode is None:
                continue
            uptime = now - child.started
            child.quick_exits = child.quick_exits + 1 if uptime < self.backoff.stable else 0
            if child.quick_exits >= self.backoff.attempts:
                raise ChildFailed(
                    f"the {child.name} exited {child.quick_exits} times in a row, each within "
                    f"{self.backoff.stable:.0f}s of starting (last: {how_it_ended(returncode)}); "
                    f"see its log {child.log_path}")
            delay = self.backoff.delay(child.quick_exits)
            child.restart_at = now + delay
            log.warning("child process exited; restarting it", extra={
                "child": child.name, "pid": child.process.pid, "exit": how_it_ended(returncode),
                "uptime_s": round(uptime, 1), "quick_exits": child.quick_exits, "restart_in_s": delay,
                "log": str(child.log_path)})

    def watch(self, seconds: float = math.inf, interval: float = 0.2) -> None:
        """Keep the children running for `seconds` (by default until an exception: a signal, ChildFailed)."""
        deadline = time.monotonic() + seconds
        while True:
            self.check()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(interval, left))

    def run(self, command: list[str]) -> int:
        """Run a one-off command to its end, its output where ours goes, keeping the children running
        meanwhile; its exit status. Interrupted, it is stopped like a child."""
        step = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            while step.poll() is None:
                self.watch(0.2)
            return step.returncode
        finally:
            terminate([step], self.stop_timeout)

    def stop(self) -> None:
        """Stop every child: SIGTERM, up to `stop_timeout` seconds to exit, then SIGKILL."""
        terminate([child.process for child in self.children.values() if child.process], self.stop_timeout)

    def _spawn(self, child: Child) -> None:
        child.start()
        child.restart_at = None
