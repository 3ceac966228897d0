"""What the local stack and the API keep in the state dir (issue 24): secrets only their owner can
read, a token key file refused unless only this user controls it, and PIDs checked against the
command line they were started with before they are signalled or trusted."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from events.errors import HarmonyError
from harmony import bootstrap, stack
from harmony.settings import load


@pytest.fixture
def started_stack(tmp_path, monkeypatch):
    """`stack.up` in tmp_path with every service a `sleep` (no binaries, no waiting for them)."""
    monkeypatch.setattr(stack, "find_weed", lambda: tmp_path / "weed")
    monkeypatch.setattr(stack, "find_kafka_lib", lambda: tmp_path / "lib")
    monkeypatch.setattr(stack, "require_java", lambda: "java")
    monkeypatch.setattr(stack, "_format_storage", lambda *args: None)
    monkeypatch.setattr(stack, "_wait_s3_ready", lambda *args: None)
    monkeypatch.setattr(stack, "_wait_kafka_ready", lambda *args: None)
    spawn = stack._spawn
    monkeypatch.setattr(stack, "_spawn",
                        lambda args, log_path, env=None, timer_slack_ns=None: spawn(["sleep", "60"], log_path))
    previous = os.umask(0o022)  # what a usual login gives: files readable by all
    try:
        info = stack.up(tmp_path, "t", 1)
    finally:
        os.umask(previous)
    yield info
    stack.down(tmp_path)


def mode(path) -> int:
    return path.stat().st_mode & 0o777


def test_the_stack_file_and_the_s3_keys_are_readable_by_their_owner_only(tmp_path, started_stack):
    assert started_stack["running"], started_stack["services"]
    for name in ("stack.json", "credentials.json", "identities.json"):
        assert mode(tmp_path / name) == 0o600, name
    assert "secret_key" in json.loads((tmp_path / "stack.json").read_text())


def test_an_identities_file_left_open_to_others_is_closed(tmp_path):
    (tmp_path / "identities.json").write_text("{}")
    (tmp_path / "identities.json").chmod(0o644)  # as the release before wrote it
    stack._credentials(tmp_path)
    assert mode(tmp_path / "identities.json") == 0o600


def test_a_pid_another_program_has_now_is_neither_stopped_nor_taken_for_the_service(tmp_path, started_stack):
    # After a reboot, the PIDs in stack.json may belong to anything.
    stranger = subprocess.Popen(["sleep", "61"])
    try:
        state = json.loads((tmp_path / "stack.json").read_text())
        ours = state["services"]["kafka-1"]["pid"]
        state["services"]["s3"]["pid"] = stranger.pid
        (tmp_path / "stack.json").write_text(json.dumps(state))
        info = stack.status(tmp_path)
        assert not info["running"] and not info["services"]["s3"]["alive"] and info["services"]["kafka-1"]["alive"]
        stack.down(tmp_path)
        assert stranger.poll() is None, "a process that is not the stack's was signalled"
        assert not stack._alive(ours)
    finally:
        stranger.kill()
        stranger.wait()


@pytest.fixture
def key_file(tmp_path, monkeypatch):
    monkeypatch.delenv("HARMONY_TOKEN_KEY", raising=False)
    monkeypatch.setenv("HARMONY_STATE_DIR", str(tmp_path))
    path = tmp_path / "token.key"
    assert bootstrap.token_key(load())  # generated
    assert mode(path) == 0o600
    return path


def test_a_token_key_file_open_to_others_is_refused(key_file):
    key_file.chmod(0o644)
    with pytest.raises(HarmonyError, match="open to other users .*chmod 600"):
        bootstrap.token_key(load())


def test_a_token_key_file_that_is_a_symbolic_link_is_refused(key_file, tmp_path):
    target = tmp_path / "elsewhere.key"
    key_file.rename(target)
    key_file.symlink_to(target)
    with pytest.raises(HarmonyError, match="symbolic link"):
        bootstrap.token_key(load())


def test_a_token_key_file_of_another_user_is_refused(key_file, monkeypatch):
    monkeypatch.setattr(os, "getuid", lambda: os.stat(key_file).st_uid + 1)
    with pytest.raises(HarmonyError, match="owned by user id"):
        bootstrap.token_key(load())
