"""What every widget's view shares: it shows its ``widget`` when a notebook displays it.

Example:
    >>> import ipywidgets
    >>> class Hello(View):
    ...     def __init__(self):
    ...         self.widget = ipywidgets.Label("hello")
    >>> "text/plain" in Hello()._repr_mimebundle_()
    True
"""

from __future__ import annotations

from typing import Any


class View:
    """A widget's view: holds its ipywidgets tree in ``widget`` and displays as it."""

    widget: Any

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)
