"""Small HTML fragments for the widgets. Every text from a model or a user is escaped.

Example:
    >>> escape("<script>alert(1)</script>")
    '&lt;script&gt;alert(1)&lt;/script&gt;'
    >>> text_block("a < b")
    '<div class="cna-text" style="white-space: pre-wrap; font-family: monospace;">a &lt; b</div>'
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Literal

Level = Literal["error", "warning", "info", "ok"]

_COLOURS = {"error": "#b00020", "warning": "#9a6700", "info": "#555555", "ok": "#1a7f37"}


def escape(text: object) -> str:
    """``html.escape`` of ``str(text)``, quotes included.

    Example:
        >>> escape('say "hi" & go')
        'say &quot;hi&quot; &amp; go'
    """
    return html.escape(str(text), quote=True)


def text_block(text: str, *, muted: bool = False) -> str:
    """Escaped text that keeps its line breaks, in a monospace block."""
    colour = " color: #777777;" if muted else ""
    return (f'<div class="cna-text" style="white-space: pre-wrap; font-family: monospace;'
            f'{colour}">{escape(text)}</div>')


def message(level: Level, text: str) -> str:
    """One coloured line; errors and warnings say so in words, not only in colour.

    Example:
        >>> message("error", "empty <set>")
        '<div class="cna-error" style="color: #b00020;">error: empty &lt;set&gt;</div>'
        >>> message("ok", "saved")
        '<div class="cna-ok" style="color: #1a7f37;">saved</div>'
    """
    prefix = f"{level}: " if level in ("error", "warning") else ""
    return (f'<div class="cna-{level}" style="color: {_COLOURS[level]};">'
            f"{prefix}{escape(text)}</div>")


def messages(items: Iterable[tuple[Level, str]]) -> str:
    """Several :func:`message` lines; an empty string when there are none."""
    return "".join(message(level, text) for level, text in items)


def badge(label: str, level: Level) -> str:
    """A small coloured label (e.g. "refusal", "unsaved").

    Example:
        >>> badge("refusal", "error")
        '<span class="cna-badge" style="color: #b00020; font-weight: bold;">refusal</span>'
    """
    return (f'<span class="cna-badge" style="color: {_COLOURS[level]}; font-weight: bold;">'
            f"{escape(label)}</span>")


def table(frame, max_rows: int = 200) -> str:
    """A pandas DataFrame as an escaped HTML table in a scrolling box."""
    shown = frame.head(max_rows)
    more = "" if len(frame) <= max_rows else \
        f"<div>… {len(frame) - max_rows} more rows</div>"
    return ('<div style="max-height: 320px; overflow: auto;">'
            + shown.to_html(index=False, escape=True, border=0) + more + "</div>")
