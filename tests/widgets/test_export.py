"""Static export: self-contained HTML and PNG with provenance, for every widget."""

from __future__ import annotations

import importlib
import json

import plotly.graph_objects as go
import pytest

import workbench as wb
from tests.helpers import PROMPTS
from tests.widgets import widget_fixtures
from tests.widgets.widget_fixtures import NEGATIVE, POSITIVE
from widgets.dose_response import dose_response
from widgets.export import (
    PROVENANCE_KEY,
    add_png_text,
    chromium_path,
    export,
    read_html_provenance,
    read_png_text,
)
from widgets.heatmap import DifferenceHeatmap, HeatmapController
from widgets.steering_slider import SteeringController
from widgets.token_view import TokenViewController
from widgets.venn import CircuitVenn, VennController

# ``widgets.export`` the attribute is the export() function (re-exported by the package),
# so fetch the module itself to patch it.
export_module = importlib.import_module("widgets.export")

tiny_circuit = widget_fixtures.tiny_circuit

PNG = b"\x89PNG\r\n\x1a\n"


def check_html(path, circuit, figure_name):
    text = path.read_text(encoding="utf-8")
    record = read_html_provenance(path)
    assert record["figure"] == figure_name
    assert record["made_by"].startswith("cna-workbench ")
    if circuit is not None:
        assert record["circuit"]["neurons"] == len(circuit)
        assert record["circuit"]["prompts"] == circuit.prompts
        assert record["circuit"]["model"] == circuit.model
        assert circuit.prompts["positive"]["sha256"][:12] in text  # in the caption too
    assert "<script src=" not in text  # self-contained: nothing fetched
    return text


def test_every_widget_writes_self_contained_html_with_provenance(tiny_llama, tiny_circuit,
                                                                  tmp_path):
    heatmap = HeatmapController(tiny_circuit, model=tiny_llama, positive=POSITIVE,
                                negative=NEGATIVE)
    [path] = export(heatmap, tmp_path / "heatmap", png=False)
    text = check_html(path, tiny_circuit, "difference heatmap")
    assert "Plotly.newPlot" in text and len(text) > 1_000_000  # plotly.js is inlined

    tokens = TokenViewController.read(tiny_llama, PROMPTS[:2], tiny_circuit)
    [path] = export(tokens, tmp_path / "tokens.html", png=False)
    text = check_html(path, tiny_circuit, "token view")
    assert path.name == "tokens.html" and tokens.html() in text

    other = wb.discover(tiny_llama, POSITIVE, NEGATIVE, top_k=10, universal=None,
                        progress=False)
    venn = VennController([tiny_circuit, other], names=["twenty", "ten"])
    [path] = export(CircuitVenn.from_controller(venn, interactive=False), tmp_path / "venn",
                    png=False)
    record = read_html_provenance(path)
    assert sorted(record["circuits"]) == ["A: twenty", "B: ten"]
    assert record["circuits"]["B: ten"]["neurons"] == 10

    slider = SteeringController(tiny_llama, tiny_circuit, PROMPTS[:1], multiplier=0.0,
                                max_new_tokens=8)
    slider.run()
    assert slider.wait(60) and slider.status == "done"
    [path] = export(slider, tmp_path / "slider", png=False)
    text = check_html(path, tiny_circuit, "steering slider")
    assert "cna-completions" in text and read_html_provenance(path)["multiplier"] == 0.0


def test_a_plain_figure_takes_the_circuit_given(tiny_circuit, tmp_path):
    table = _summary_table()
    [path] = export(dose_response(table), tmp_path / "dose", png=False, circuit=tiny_circuit)
    check_html(path, tiny_circuit, "figure")


def test_png_needs_a_browser_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "chromium_path", lambda: None)
    with pytest.raises(wb.WorkbenchError, match="needs a Chromium-based browser"):
        export(go.Figure(), tmp_path / "x", png=True)
    written = export(go.Figure(), tmp_path / "y")  # png=None: HTML only
    assert [p.suffix for p in written] == [".html"]


def test_png_text_chunks_round_trip_and_keep_the_image_valid():
    import zlib

    # a 1x1 white PNG, built by hand
    def chunk(kind, data):
        return (len(data).to_bytes(4, "big") + kind + data
                + (zlib.crc32(kind + data) & 0xFFFFFFFF).to_bytes(4, "big"))
    png = PNG + chunk(b"IHDR", bytes([0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0])) + \
        chunk(b"IDAT", zlib.compress(b"\x00\xff\xff\xff")) + chunk(b"IEND", b"")
    tagged = add_png_text(png, PROVENANCE_KEY, json.dumps({"circuit": "ü"}))
    assert json.loads(read_png_text(tagged)[PROVENANCE_KEY]) == {"circuit": "ü"}
    assert tagged.endswith(chunk(b"IEND", b"")) and tagged.startswith(png[:-12])
    at, kinds = len(PNG), []  # every chunk's CRC holds: a PNG reader accepts the file
    while at < len(tagged):
        length = int.from_bytes(tagged[at:at + 4], "big")
        kind, data = tagged[at + 4:at + 8], tagged[at + 8:at + 8 + length]
        crc = int.from_bytes(tagged[at + 8 + length:at + 12 + length], "big")
        assert crc == zlib.crc32(kind + data) & 0xFFFFFFFF
        kinds.append(kind)
        at += 12 + length
    assert kinds == [b"IHDR", b"IDAT", b"iTXt", b"IEND"]


@pytest.mark.skipif(chromium_path() is None,
                    reason="PNG export needs Chromium (apt-get install chromium, or set "
                           "BROWSER_PATH)")
def test_png_export_through_kaleido_carries_the_provenance(tiny_llama, tiny_circuit, tmp_path):
    heatmap = DifferenceHeatmap(tiny_circuit, model=tiny_llama, positive=POSITIVE,
                                negative=NEGATIVE, interactive=False)
    tokens = TokenViewController.read(tiny_llama, PROMPTS[:2], tiny_circuit)
    written = export_module.export_all([heatmap, tokens], [tmp_path / "h", tmp_path / "t"],
                                       png=True)
    assert sorted(p.name for p in written) == ["h.html", "h.png", "t.html", "t.png"]
    for png in (tmp_path / "h.png", tmp_path / "t.png"):
        data = png.read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000
        record = json.loads(read_png_text(data)[PROVENANCE_KEY])
        assert record["circuit"]["neurons"] == len(tiny_circuit)
        assert record["circuit"]["prompts"] == tiny_circuit.prompts
    assert heatmap.export(str(tmp_path / "view")) is not None
    assert "wrote" in heatmap.status.value and (tmp_path / "view.png").is_file()


def _summary_table():
    import pandas as pd

    return pd.DataFrame({
        "benchmark": ["b"] * 5, "intervention": ["baseline", "cna", "cna", "random", "random"],
        "kind": ["baseline", "cna", "cna", "random", "random"],
        "size": [None, 46, 230, 46, 230], "fraction": [None, .001, .005, .001, .005],
        "multiplier": [1.0, 0.0, 0.0, 0.0, 0.0], "refusal_rate": [.9, .5, .2, .9, .85],
        "quality": [1.0, .98, .9, .99, .97]})
