"""Errors that describe a user's mistake. The CLI prints these as one clear line, never a traceback."""

from __future__ import annotations


class LmlabError(Exception):
    """Base class: a problem the user can fix (bad config, missing file, corrupt checkpoint...)."""


class ConfigError(LmlabError):
    """An unknown recipe, an unknown config key or a value of the wrong type."""


class DataError(LmlabError):
    """A missing, empty or malformed data file."""


class CheckpointError(LmlabError):
    """A missing, corrupt or truncated checkpoint, or one of the wrong model family."""


class GenerationError(LmlabError):
    """Bad generation options (negative temperature, top_p outside (0, 1], ...)."""
