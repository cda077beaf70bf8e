"""Callback lists: how controllers tell views (and each other) that something happened.

Example:
    >>> seen = []
    >>> changed = Observers()
    >>> _ = changed.add(seen.append)
    >>> changed("hello")
    >>> seen
    ['hello']
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Observers:
    """An ordered list of callbacks, all called with the same arguments."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[..., Any]] = []
        self._lock = threading.Lock()

    def add(self, callback: Callable[..., Any]) -> Callable[..., Any]:
        """Register ``callback`` (usable as a decorator); returns it."""
        if not callable(callback):
            raise TypeError(f"an observer must be callable, not {callback!r}")
        with self._lock:
            self._callbacks.append(callback)
        return callback

    def remove(self, callback: Callable[..., Any]) -> None:
        with self._lock:
            self._callbacks.remove(callback)

    def __len__(self) -> int:
        return len(self._callbacks)

    def __call__(self, *args: Any) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback(*args)
