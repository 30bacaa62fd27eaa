"""Errors a user can fix. The CLI prints them as one line and exits non-zero."""


def first_line(exc, limit=200):
    """An exception's first message line (or its type name), short enough for a one-line error."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


class FmnistError(Exception):
    """Base class: the message alone must tell the user what went wrong and what to do."""


class ConfigError(FmnistError):
    pass


class DataError(FmnistError):
    pass


class ModelFileError(FmnistError):
    pass
