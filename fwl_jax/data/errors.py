"""The one exception type of the data layer: a one-line message that says what to change."""

import warnings


class DataError(ValueError):
    """Bad or missing input data. The message is one line and names the fix."""

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))


class DataWarning(UserWarning):
    """Input was usable but not clean (replaced bytes, skipped files)."""


def warn(message: str) -> None:
    warnings.warn(" ".join(message.split()), DataWarning, stacklevel=3)
