"""Errors a user can fix. The CLI prints them as one line and exits non-zero."""


class FmnistError(Exception):
    """Base class: the message alone must tell the user what went wrong and what to do."""


class ConfigError(FmnistError):
    pass


class DataError(FmnistError):
    pass


class ModelFileError(FmnistError):
    pass
