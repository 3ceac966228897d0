"""Fixtures of the integration tests beyond the session's stack (tests/conftest.py)."""

from tests.integration.site import site  # noqa: F401 (a session fixture: one site for every module)
