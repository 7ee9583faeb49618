"""Errors a user can fix (a bad download, a wrong archive, a damaged model file).

The ``kdpipe`` command prints their message, ``kdpipe: <message>``, and exits non-zero without
a traceback; any other exception is a bug and keeps its traceback. Kept free of heavy imports:
the command line imports it before it knows which step runs.
"""


class InputError(RuntimeError):
    """An input file or download is missing, damaged or not what was expected; the message says what to do."""


class ArchiveError(InputError):
    """A raw archive failed to download or verify, or is unsafe or wrong to unpack."""


class ModelFileError(InputError):
    """A model.pt that kdpipe cannot load safely (not written by kdpipe, or damaged)."""


class PairError(InputError):
    """A teacher and student that a method cannot pair (found when the job builds both models)."""


class DiskFullError(InputError):
    """A write that failed for lack of space (or quota): the message names the file and the space left."""


class NonFiniteLossError(InputError):
    """A run whose loss became NaN or infinite: the message names the run, the epoch, the term and what to change."""


class CheckpointError(InputError):
    """A published checkpoint that cannot be read safely, or does not fit the kdpipe model it is meant for."""
