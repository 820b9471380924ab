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


class CorruptFileError(OpenJepaError, OSError):
    """A data file exists but cannot be decoded (truncated image or video, wrong format...).

    Readers raise a subclass (``CorruptImageError``, ``CorruptVideoError``); ``SkipCorrupt`` skips, counts
    and reports any of them.

    Attributes:
        path: the file.
        reason: what the decoder said.
    """

    kind = "file"

    def __init__(self, path: object, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot decode {self.kind} {self.path}: {reason}")

    def __reduce__(self) -> tuple:
        # Keeps (path, reason) when the error crosses from a loader worker process to the main one.
        return (type(self), (self.path, self.reason))
