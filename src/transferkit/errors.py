"""Errors a user can cause and fix. The CLI prints them in one or two lines, exit code 2."""


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when empty), for one-line errors."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


class TransferkitError(Exception):
    """A mistake in a spec, a data file or a model file, with a message that says how to fix it."""


class SpecError(TransferkitError):
    """A spec key is unknown, has the wrong type or names a path that does not exist."""


class DataError(TransferkitError):
    """A dataset, label file or image cannot be used."""


class ModelError(TransferkitError):
    """A checkpoint, zoo entry, weight file or ONNX model cannot be used."""


class DiskFullError(TransferkitError):
    """A file could not be written because its file system is full (or the user's quota is spent)."""


class TrainingDiverged(TransferkitError):
    """The training loss became NaN or infinite; nothing after that step was saved."""


class TrainingInterrupted(TransferkitError):
    """Training stopped by a signal after saving a resumable checkpoint.

    `exit_code` is what the CLI exits with: 128 + the signal number, as a shell reports a process that
    signal ended (130 for Ctrl-C / SIGINT, 143 for SIGTERM)."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code


class Terminated(BaseException):
    """SIGTERM arrived outside training's own handling (the CLI exits 143, like SIGINT's KeyboardInterrupt).

    A BaseException, as KeyboardInterrupt is, so that `except Exception` blocks do not swallow it."""
