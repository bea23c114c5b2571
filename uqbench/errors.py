"""User-facing errors: each message names the problem and the fix.

The CLI prints these without a traceback and exits with status 2; anything else is a bug.
"""


class UQBenchError(Exception):
    """Base class of every error caused by the user's input or environment."""


class ConfigError(UQBenchError):
    """A malformed override, an unknown key or a value of the wrong type."""


class UnknownNameError(ConfigError):
    """A method, datamodule or backbone name that no installed plugin provides."""


class DataError(UQBenchError):
    """A data set that is missing or malformed on disk."""


class TrainingError(UQBenchError):
    """Training diverged (a non-finite loss) or cannot start."""


class CalibrationError(UQBenchError):
    """A post-training fit that the dev data cannot support (e.g. a single class)."""


class RunDirError(UQBenchError):
    """A run folder that cannot be written, or a saved run that cannot be read."""
