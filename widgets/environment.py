"""Where the widgets run, and whether live plotly figures can be used there.

JupyterLab (and Notebook 7) and VS Code show ``plotly.graph_objects.FigureWidget``: a
figure that updates in place and reports clicks and zooms back to Python. Google Colab
does not load its front-end code, so there the widgets re-draw a static ``go.Figure``
into an output area instead, and offer their controls (range boxes, pickers) for what
clicking and zooming would do. ``CNA_WIDGETS_FIGURES=static`` (or ``interactive``)
overrides the choice.

Example:
    >>> frontend() in ("colab", "vscode", "jupyter", "none")
    True
    >>> interactive_figures("static")
    False
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Literal

Frontend = Literal["colab", "vscode", "jupyter", "none"]
FigureMode = Literal["interactive", "static"]

#: Environment variable that forces a figure mode.
FIGURES_VARIABLE = "CNA_WIDGETS_FIGURES"


def frontend() -> Frontend:
    """The notebook front-end this Python process serves.

    ``"colab"`` when ``google.colab`` is imported, ``"vscode"`` when VS Code started the
    kernel, ``"jupyter"`` inside any other IPython kernel, ``"none"`` elsewhere (a
    script, a test run).

    Example:
        >>> frontend()  # doctest: +SKIP
        'jupyter'
    """
    if "google.colab" in sys.modules:
        return "colab"
    if "VSCODE_PID" in os.environ or "VSCODE_CWD" in os.environ:
        return "vscode"
    if in_kernel():
        return "jupyter"
    return "none"


def in_kernel() -> bool:
    """Whether this process is a Jupyter kernel (so widgets and displays reach a front-end).

    Example:
        >>> in_kernel()
        False
    """
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipykernel
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def interactive_figures(mode: FigureMode | None = None) -> bool:
    """Whether to use live ``FigureWidget`` figures (True) or static re-drawing (False).

    Args:
        mode: ``"interactive"`` or ``"static"`` to choose; None: the
            ``CNA_WIDGETS_FIGURES`` variable if set, else static on Colab or when
            ``anywidget`` (which plotly's ``FigureWidget`` needs) is missing.

    Example:
        >>> interactive_figures("interactive")
        True
    """
    chosen = mode or os.environ.get(FIGURES_VARIABLE) or None
    if chosen is not None:
        if chosen not in ("interactive", "static"):
            raise ValueError(
                f"figure mode must be 'interactive' or 'static', not {chosen!r} "
                f"(from the argument or {FIGURES_VARIABLE})"
            )
        return chosen == "interactive"
    if frontend() == "colab":
        return False
    return importlib.util.find_spec("anywidget") is not None
