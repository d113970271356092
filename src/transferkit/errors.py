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


class TrainingInterrupted(TransferkitError):
    """Training stopped by Ctrl-C after saving a resumable checkpoint (CLI exit code 130)."""
