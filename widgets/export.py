"""Static figures for papers and slides: every widget as an HTML file and a PNG.

:func:`export` writes what a widget shows to ``<stem>.html`` (self-contained: plotly's
JavaScript is inlined, nothing is fetched when it opens) and ``<stem>.png`` (plotly's
``write_image`` through kaleido, which drives a Chromium-based browser). Both carry the
circuit's provenance: the HTML in ``<meta name="cna-provenance">`` (JSON) and a caption
under the figure, the PNG in a ``cna-provenance`` text chunk (:func:`read_png_text`) and
in the figure's own caption line.

It takes a plotly figure (the dose-response figure, any ``controller.figure()``), a
widget (:class:`~widgets.DifferenceHeatmap`, :class:`~widgets.CircuitVenn`,
:class:`~widgets.SteeringSlider`, :class:`~widgets.token_view.TokenView`) or its
controller. Widgets whose view is HTML (the token view, the slider's completions) keep
that HTML in the ``.html`` file and draw a plotly version of it for the PNG.

The browser is ``BROWSER_PATH`` if set, else the first of ``chromium``,
``chromium-browser``, ``google-chrome`` found on the ``PATH`` (:func:`chromium_path`);
without one, PNGs are skipped (``png=None``) or refused (``png=True``).

Example:
    >>> import plotly.graph_objects as go, tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> paths = export(go.Figure(go.Bar(y=[1, 2])), folder / "bars", png=False,
    ...                provenance={"figure": "bars"})
    >>> [p.name for p in paths]
    ['bars.html']
    >>> read_html_provenance(paths[0])["figure"]
    'bars'
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

from workbench.circuit import Circuit
from workbench.errors import InvalidArgumentError
from workbench.io import atomic_write_text

from . import markup

#: Name of the HTML meta tag and of the PNG text chunk that hold the provenance.
PROVENANCE_KEY = "cna-provenance"

#: Browsers tried, in order, when ``BROWSER_PATH`` is not set.
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


@dataclass
class Exportable:
    """What a widget exports: a figure (for the PNG, and the HTML unless ``html`` is
    given), optional HTML of its own view, and where it came from."""

    name: str
    figure: go.Figure
    html: str | None = None
    circuit: Circuit | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def chromium_path() -> str | None:
    """The browser kaleido will drive for PNGs, or None when there is none.

    Example:
        >>> chromium_path() is None or os.path.exists(chromium_path())
        True
    """
    given = os.environ.get("BROWSER_PATH")
    if given:
        return given if os.path.exists(given) else None
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def provenance(circuit: Circuit | None = None, **extra: Any) -> dict[str, Any]:
    """The provenance recorded with an exported figure.

    The circuit's model, size, prompt sets (names and hashes), formatting and selection,
    the workbench version that made the figure and when, plus ``extra``.

    Example:
        >>> from workbench.circuit import Circuit, Neuron
        >>> c = Circuit.from_neurons([Neuron(1, 2, 0.5)], model={"name": "m",
        ...     "architecture": "LlamaForCausalLM", "n_layers": 2, "d_mlp": 8})
        >>> p = provenance(c, figure="heatmap")
        >>> p["circuit"]["neurons"], p["circuit"]["model"]["name"], p["figure"]
        (1, 'm', 'heatmap')
    """
    from workbench import __version__

    record: dict[str, Any] = {
        "made_by": f"cna-workbench {__version__}",
        "made_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if circuit is not None:
        record["circuit"] = circuit_record(circuit)
    record.update(extra)
    return record


def circuit_record(circuit: Circuit) -> dict[str, Any]:
    """A circuit's provenance without its neurons: name, size, model, prompt sets (names
    and hashes), formatting, selection settings and the version that made it."""
    return {"name": circuit.name, "neurons": len(circuit), "model": dict(circuit.model),
            "prompts": {k: dict(v) for k, v in circuit.prompts.items()},
            "prompting": dict(circuit.prompting), "selection": dict(circuit.selection),
            "created_by": circuit.created_by}


def caption(record: dict[str, Any]) -> str:
    """One line naming the circuit, model and prompt sets of a provenance record.

    Example:
        >>> caption({"made_by": "cna-workbench 0.1.0", "figure": "venn"})
        'venn · cna-workbench 0.1.0'
    """
    parts = [str(record["figure"])] if record.get("figure") else []
    circuit = record.get("circuit")
    if circuit:
        parts.append(f"circuit {circuit['name']} ({circuit['neurons']} neurons)")
        parts.append(f"model {circuit['model'].get('name')}")
        hashes = [f"{side} sha256 {str(ref.get('sha256', ''))[:12]}"
                  for side, ref in circuit.get("prompts", {}).items() if ref.get("sha256")]
        parts.extend(hashes)
    for label, other in (record.get("circuits") or {}).items():
        parts.append(f"{label} ({other['neurons']} neurons, model {other['model'].get('name')})")
    parts.append(str(record.get("made_by", "")))
    return " · ".join(p for p in parts if p)


def exportable(item: Any) -> Exportable:
    """What ``item`` (a figure, a widget or a controller) exports."""
    if isinstance(item, Exportable):
        return item
    if isinstance(item, go.Figure):
        return Exportable("figure", item)
    for candidate in (item, getattr(item, "controller", None)):
        method = getattr(candidate, "exportable", None)
        if callable(method):
            return method()
    raise InvalidArgumentError(
        f"cannot export a {type(item).__name__}: give a plotly figure, a widget "
        "(DifferenceHeatmap, CircuitVenn, SteeringSlider, TokenView) or its controller")


def export(item: Any, path: str | os.PathLike, *, png: bool | None = None,
           circuit: Circuit | None = None, provenance: dict[str, Any] | None = None,
           scale: float = 2.0) -> list[Path]:
    """Write ``item`` to ``<path>.html`` and (when possible) ``<path>.png``.

    Args:
        item: a plotly figure, a widget, or a widget's controller.
        path: the files' stem (a suffix such as ``.html`` is replaced).
        png: True: write the PNG or fail; False: HTML only; None: the PNG when a browser
            is found (:func:`chromium_path`).
        circuit: the circuit whose provenance to record (default: the widget's).
        provenance: a record of one's own, instead of :func:`provenance`'s.
        scale: pixel density of the PNG.

    Returns:
        The paths written.

    Example:
        >>> export(heatmap, "figures/heatmap")  # doctest: +SKIP
        [PosixPath('figures/heatmap.html'), PosixPath('figures/heatmap.png')]
    """
    return export_all([item], [path], png=png, circuit=circuit, provenance=provenance,
                      scale=scale)


def export_all(items: Sequence[Any], paths: Sequence[str | os.PathLike], *,
               png: bool | None = None, circuit: Circuit | None = None,
               provenance: dict[str, Any] | None = None, scale: float = 2.0) -> list[Path]:
    """:func:`export` for several items; the PNGs share one browser start."""
    if len(items) != len(paths):
        raise InvalidArgumentError(f"give one path per item ({len(items)}), not {len(paths)}")
    browser = chromium_path()
    if png and browser is None:
        raise InvalidArgumentError(
            "PNG export needs a Chromium-based browser (Debian: apt-get install chromium; "
            "or set BROWSER_PATH); pass png=False for HTML only")
    written: list[Path] = []
    pngs: list[tuple[go.Figure, Path, dict[str, Any]]] = []
    for item, given in zip(items, paths):
        what = exportable(item)
        stem = Path(given)
        stem = stem.with_suffix("") if stem.suffix in (".html", ".png") else stem
        stem.parent.mkdir(parents=True, exist_ok=True)
        record = dict(provenance) if provenance is not None else _provenance(
            circuit or what.circuit, figure=what.name, **what.extra)
        html_path = stem.with_name(stem.name + ".html")
        atomic_write_text(html_path, _page(what, record))
        written.append(html_path)
        if png is not False and browser is not None:
            pngs.append((_captioned(what.figure, record), stem.with_name(stem.name + ".png"),
                         record))
    if pngs:
        with _browser(browser):
            sizes = [_size(figure) for figure, _, _ in pngs]  # else kaleido draws 700 x 500
            pio.write_images([figure for figure, _, _ in pngs], [p for _, p, _ in pngs],
                             format="png", scale=scale, width=[w for w, _ in sizes],
                             height=[h for _, h in sizes])
            for (figure, png_path, _), (width, height) in zip(pngs, sizes):
                if not png_path.is_file():  # kaleido returns a batch's errors unraised
                    png_path.write_bytes(pio.to_image(figure, format="png", scale=scale,
                                                      width=width, height=height))
        for _, png_path, record in pngs:
            png_path.write_bytes(add_png_text(png_path.read_bytes(), PROVENANCE_KEY,
                                              json.dumps(record, ensure_ascii=False)))
            written.append(png_path)
    return written


def _size(figure: go.Figure) -> tuple[int, int]:
    """The figure's own width and height, or 1000 x 600."""
    return int(figure.layout.width or 1000), int(figure.layout.height or 600)


def _provenance(circuit: Circuit | None, **extra: Any) -> dict[str, Any]:
    return provenance(circuit, **extra)


@contextlib.contextmanager
def _browser(path: str | None) -> Iterator[None]:
    """Point kaleido at ``path`` for the block (it reads ``BROWSER_PATH``)."""
    before = os.environ.get("BROWSER_PATH")
    if path is not None:
        os.environ["BROWSER_PATH"] = path
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("BROWSER_PATH", None)
        else:
            os.environ["BROWSER_PATH"] = before


def _captioned(figure: go.Figure, record: dict[str, Any]) -> go.Figure:
    """A copy of ``figure`` with the provenance caption as a line under the plot."""
    copy = go.Figure(figure)
    bottom = (copy.layout.margin.b if copy.layout.margin.b is not None else 80)
    copy.add_annotation(text=markup.escape(caption(record)), xref="paper", yref="paper",
                        x=0, y=0, yshift=-bottom + 4, xanchor="left", yanchor="bottom",
                        showarrow=False, font={"size": 9, "color": "#666666"})
    copy.update_layout(margin={"b": bottom + 18})
    return copy


def _page(what: Exportable, record: dict[str, Any]) -> str:
    """A self-contained HTML page: the figure (or the widget's HTML) and its caption."""
    meta = markup.escape(json.dumps(record, ensure_ascii=False))
    title = markup.escape(f"{what.name}: {caption(record)}")
    if what.html is not None:
        body = what.html
    else:
        body = pio.to_html(what.figure, full_html=False, include_plotlyjs=True,
                           config={"displaylogo": False})
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="{PROVENANCE_KEY}" content="{meta}"><title>{title}</title></head>'
            f'<body style="font-family: sans-serif;"><figure style="margin: 0;">{body}'
            f'<figcaption class="cna-caption" style="color: #666; font-size: 12px;">'
            f'{markup.escape(caption(record))}</figcaption></figure></body></html>\n')


def read_html_provenance(path: str | os.PathLike) -> dict[str, Any]:
    """The provenance record of an HTML file written by :func:`export`."""
    import html
    import re

    text = Path(path).read_text(encoding="utf-8")
    found = re.search(rf'<meta name="{PROVENANCE_KEY}" content="([^"]*)">', text)
    if found is None:
        raise InvalidArgumentError(f"{path} has no {PROVENANCE_KEY} meta tag")
    return json.loads(html.unescape(found.group(1)))


# -- PNG text chunks -------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def add_png_text(data: bytes, key: str, text: str) -> bytes:
    """``data`` (a PNG file) with an ``iTXt`` chunk ``key`` = ``text`` (UTF-8) before its end.

    Example:
        >>> import zlib
        >>> png = _PNG_SIGNATURE + _chunk(b"IEND", b"")
        >>> read_png_text(add_png_text(png, "k", "värde"))
        {'k': 'värde'}
    """
    if not data.startswith(_PNG_SIGNATURE):
        raise InvalidArgumentError("not a PNG file")
    end = data.rfind(b"IEND") - 4  # the IEND chunk starts with its 4-byte length
    # iTXt: keyword, 0, compression flag 0, method 0, empty language tag, 0, empty
    # translated keyword, 0, the text in UTF-8.
    payload = key.encode("latin-1") + b"\x00\x00\x00" + b"\x00" + b"\x00" + text.encode("utf-8")
    return data[:end] + _chunk(b"iTXt", payload) + data[end:]


def read_png_text(data: bytes | str | os.PathLike) -> dict[str, str]:
    """The ``tEXt`` and ``iTXt`` chunks of a PNG file (its bytes or its path)."""
    raw = data if isinstance(data, bytes) else Path(data).read_bytes()
    found: dict[str, str] = {}
    at = len(_PNG_SIGNATURE)
    while at + 8 <= len(raw):
        length, kind = struct.unpack(">I4s", raw[at:at + 8])
        body = raw[at + 8:at + 8 + length]
        if kind == b"tEXt":
            key, _, value = body.partition(b"\x00")
            found[key.decode("latin-1")] = value.decode("latin-1")
        elif kind == b"iTXt":
            key, _, rest = body.partition(b"\x00")
            rest = rest[2:]  # compression flag and method (uncompressed here)
            _language, _, rest = rest.partition(b"\x00")
            _translated, _, value = rest.partition(b"\x00")
            found[key.decode("latin-1")] = value.decode("utf-8")
        at += 12 + length
    return found


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)
