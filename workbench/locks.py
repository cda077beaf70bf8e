"""One lock per model, so that hooked runs never overlap.

Steering hooks and nnsight's tracing act on every forward pass of a model, whichever
thread makes it. Activation collection (:func:`workbench.activations.collect`),
generation (:func:`workbench.generation.generate`), MMLU scoring and the steering contexts
(:func:`workbench.steering.steer`, :func:`workbench.steering.add_vector`, for as long as
their hooks are registered) hold :func:`model_lock`, so a notebook cell that discovers a
circuit or opens a ``with steer(...)`` block waits for a widget's background generation
(and the other way round) instead of corrupting it.

Example:
    >>> class M: pass
    >>> m = M()
    >>> model_lock(m) is model_lock(m)
    True
"""

from __future__ import annotations

import threading
import weakref

_LOCKS: weakref.WeakKeyDictionary[object, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: object) -> threading.RLock:
    """The re-entrant lock that serialises hooked runs on ``model``."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock
