"""Exceptions raised for bad input.

Every error a user can cause derives from :class:`WorkbenchError`, and its message says
what was wrong and how to fix it. The command line prints that message on one line and
exits non-zero instead of showing a traceback.
"""

from __future__ import annotations


class WorkbenchError(Exception):
    """Base class of all user-facing errors of cna-workbench."""


class UnsupportedArchitectureError(WorkbenchError):
    """The model's architecture has no adapter that names its MLP down-projection."""


class ModelLoadError(WorkbenchError):
    """A model could not be found or loaded."""


class PromptSetError(WorkbenchError, ValueError):
    """A prompt set is empty, malformed, unreadable or unsuitable for the task."""


class PromptTooLongError(PromptSetError):
    """A prompt does not fit in the model's context window."""


class FileFormatError(WorkbenchError, ValueError):
    """A file the workbench reads is truncated, corrupted, of the wrong kind, or holds
    values of the wrong type or out of range (a non-finite number, an unknown layer)."""


class CircuitFormatError(FileFormatError):
    """A circuit file is not valid circuit JSON, or has an unsupported version."""


class OutputPathError(WorkbenchError, ValueError):
    """An output path cannot be written: its parent cannot be created, it is a folder where
    a file is expected (or the reverse), or it would replace a file the command keeps."""


class CircuitMismatchError(WorkbenchError, ValueError):
    """A circuit was discovered on a model with a different shape or architecture."""


class InvalidArgumentError(WorkbenchError, ValueError):
    """An argument has the wrong type or is out of range."""


class SteeringError(InvalidArgumentError):
    """A steering argument (multiplier, positions, signs, vector) is invalid."""


class JudgeError(WorkbenchError):
    """A judge model (e.g. the StrongREJECT rubric judge) could not be reached or configured."""


class BehaviourFilterError(PromptSetError):
    """A behaviour filter (keep prompts that do / do not show a behaviour) left a set empty."""
