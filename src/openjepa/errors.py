"""Errors the user can act on. The CLI prints their message (which names the file/key and the fix)."""


class OpenJepaError(Exception):
    """Base class of user-facing errors: printed without a traceback by the CLI."""


class ConfigError(OpenJepaError, ValueError):
    """A configuration problem; the message names the key and the fix."""


class CheckpointError(OpenJepaError, RuntimeError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


class NonFiniteLossError(OpenJepaError, RuntimeError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


class DataError(OpenJepaError, RuntimeError):
    """Input data that cannot be used (too many unreadable files, malformed lists...)."""
