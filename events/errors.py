"""The project's error base class.

`HarmonyError` is a failure the user can act on (bad input, a service that is down, a missing
file): the CLI prints it as one line and exits non-zero. Anything else is a bug and keeps its
traceback.
"""


class HarmonyError(Exception):
    """A failure with a message meant for the user."""
