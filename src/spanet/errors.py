"""The one exception type for mistakes a user can fix (bad paths, names, configs, files).

The CLI prints these as a single `error: ...` line instead of a traceback; library callers can catch them.
"""

__all__ = ["SpanetError"]


class SpanetError(Exception):
    """A user-facing error: the message names what is wrong and says what to do."""
