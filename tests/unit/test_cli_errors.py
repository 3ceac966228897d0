"""The CLI's error contract: a user's error is one line and exit 1; a bug keeps its traceback."""

from __future__ import annotations

import pytest

from events.errors import HarmonyError
from harmony import maintenance
from harmony.cli import main


@pytest.fixture
def failing_verify(monkeypatch, tmp_path):
    monkeypatch.setenv("HARMONY_STATE_DIR", str(tmp_path))

    def fail_with(error: BaseException) -> None:
        def run_verify(settings, as_json):
            raise error

        monkeypatch.setattr(maintenance, "run_verify", run_verify)

    return fail_with


@pytest.mark.parametrize("error", [HarmonyError("the archive has a hole"), ConnectionRefusedError("refused"),
                                   FileNotFoundError("no such file")])
def test_a_user_error_is_one_line_and_exit_1(failing_verify, capsys, error):
    failing_verify(error)
    assert main(["verify"]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"harmony verify: {error}\n" and captured.out == ""


def test_a_bug_is_not_dressed_up_as_a_user_error(failing_verify):
    failing_verify(ValueError("a library's own ValueError"))
    with pytest.raises(ValueError, match="a library's own"):
        main(["verify"])


def test_a_bad_setting_is_a_user_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HARMONY_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("HARMONY_PARTITIONS", "many")
    assert main(["stack", "status"]) == 1
    assert capsys.readouterr().err == "harmony stack: HARMONY_PARTITIONS='many' is not a number\n"


def test_a_trusted_proxy_must_be_an_address_or_a_network(monkeypatch, tmp_path, capsys):
    from harmony.settings import load

    monkeypatch.setenv("HARMONY_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("HARMONY_TRUSTED_PROXIES", " 10.0.0.0/8, ::1 ")
    assert load().trusted_proxies == "10.0.0.0/8,::1"
    monkeypatch.setenv("HARMONY_TRUSTED_PROXIES", "10.0.0.1,*")
    assert main(["stack", "status"]) == 1
    assert capsys.readouterr().err == "harmony stack: HARMONY_TRUSTED_PROXIES: '*' is not an IP address or network\n"
