"""transferkit's error hierarchy.

Every error a user can cause is a ``TransferkitError`` whose message names the file,
field or parameter at fault and says how to fix it. The library never calls ``sys.exit``;
the CLI turns these into a one-line message and exit code 2.
"""

from __future__ import annotations


class TransferkitError(Exception):
    """Base class of every error transferkit raises on purpose."""


class ConfigError(TransferkitError, ValueError):
    """A parameter has a value outside what it accepts."""


class DataError(TransferkitError):
    """A dataset cannot be read or does not have the expected shape."""


class BackboneError(TransferkitError):
    """A backbone cannot be built or its weights cannot be loaded."""


class WeightsNotFoundError(BackboneError):
    """Pretrained weights were asked for but are not on this machine."""


class UnsafeFileError(TransferkitError):
    """A file would need unsafe deserialisation, or points outside where it may."""


class NotFittedError(TransferkitError, AttributeError):
    """A model was used before ``fit`` (or before loading a run directory)."""


class StoreError(TransferkitError):
    """A feature store or checkpoint cannot be read or written."""


class TrainingDivergedError(TransferkitError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
