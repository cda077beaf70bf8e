"""What every widget's view shares: its ``widget``, a status line and one error handler.

A view draws what its controller holds and turns clicks into calls of the controller's
public methods; it never reads or writes a controller's private attributes. Every view
has a status line (``status``, an ``ipywidgets.HTML`` placed in its ``widget``), runs
user actions through :meth:`View.act`, which shows a
:class:`~workbench.errors.WorkbenchError` there as an error line instead of a traceback,
and displays as its ``widget`` in a notebook.

Example:
    >>> import ipywidgets
    >>> from workbench.errors import InvalidArgumentError
    >>> class Hello(View):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.widget = ipywidgets.VBox([ipywidgets.Label("hello"), self.status])
    ...     def fail(self):
    ...         raise InvalidArgumentError("no <b>such</b> prompt")
    >>> hello = Hello()
    >>> hello.act(hello.fail) is None
    True
    >>> hello.status.value
    '<div class="cna-error" style="color: #b00020;">error: no &lt;b&gt;such&lt;/b&gt; prompt</div>'
    >>> hello.act(lambda: 42), hello.status.value
    (42, '')
    >>> "text/plain" in hello._repr_mimebundle_()
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import ipywidgets

from workbench.errors import WorkbenchError

from . import markup

T = TypeVar("T")


class View:
    """A widget's view: its ipywidgets tree in ``widget``, its status line in ``status``.

    Subclasses call ``super().__init__()`` first, then build ``widget`` with ``status``
    in it. They write the status line only through :meth:`say` and :meth:`clear_status`.
    """

    widget: Any

    def __init__(self) -> None:
        self.status = ipywidgets.HTML()
        self._reported = False  # the status line shows an error that act() reported

    def say(self, level: markup.Level, text: str) -> None:
        """Show ``text`` (escaped) as the status line, coloured by ``level``."""
        self.status.value = markup.message(level, text)
        self._reported = False

    def clear_status(self) -> None:
        """Empty the status line."""
        self.status.value = ""
        self._reported = False

    def act(self, action: Callable[[], T]) -> T | None:
        """Run a user action and return its result; a bad input shows in the status line.

        A :class:`~workbench.errors.WorkbenchError` becomes an error line (and the result
        None); other exceptions are bugs and propagate. After a success, an error line
        that :meth:`act` wrote and nothing has replaced since is cleared; lines the view
        wrote itself (progress, results, a failed generation) stay.
        """
        try:
            result = action()
        except WorkbenchError as error:
            self.say("error", str(error))
            self._reported = True
            return None
        if self._reported:
            self.clear_status()
        return result

    def export(self, path: str, *, png: bool | None = None) -> list | None:
        """Write what the widget shows to ``<path>.html`` and ``<path>.png``.

        See :func:`widgets.export.export`; the files written show in the status line
        (None and an error line for a widget that has nothing to export).
        """
        from .export import export

        written = self.act(lambda: export(self, path, png=png))
        if written:
            self.say("ok", "wrote " + ", ".join(str(p) for p in written))
        return written

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)
