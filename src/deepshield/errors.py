"""Errors raised on bad input: each message names the file or value and the fix."""


class DeepshieldError(Exception):
    """Base of every error deepshield raises on bad input; the CLI prints it in one line, exit 2."""


class DataError(DeepshieldError):
    """A dataset, image or audio file is missing, empty, corrupt or malformed."""


class ConfigError(DeepshieldError):
    """A config file, flag or name (model, dataset, optimizer) is invalid."""


class ModelError(DeepshieldError):
    """A model cannot be built or its weights do not fit it."""


class InputError(DeepshieldError):
    """A tensor argument has the wrong shape, range or value (e.g. eps < 0, x outside [0, 1])."""


class RunError(DeepshieldError):
    """A run folder is missing, incomplete or from an incompatible version."""


class TrainingError(DeepshieldError):
    """Training cannot go on (e.g. the loss became NaN)."""
