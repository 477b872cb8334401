"""The data layer's error, in a module of its own so that every data module can raise it without
importing another."""

from __future__ import annotations


class DataError(ValueError):
    """The data cannot be used; the message says what is wrong and how to fix it."""
