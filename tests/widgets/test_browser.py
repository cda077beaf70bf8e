"""End to end in a real browser: JupyterLab runs a notebook with the SteeringSlider.

Starts JupyterLab on 127.0.0.1 (no token, a free port, a temporary root folder), opens a
notebook that displays the slider on the embedded SmolLM2 with a small circuit, a
DifferenceHeatmap and the explorer, and runs all cells in headless Chromium driven by
Playwright. It types 0 into the slider's readout and waits until the steered completion
changes and the first divergent token shows with both models' top next tokens; box-zooms
the heatmap to one cell per neuron, clicks a cell to open its neuron panel and presses
"Where does it fire?" there; presses the explorer's "Discover" and opens its Differences
tab. No "Error displaying widget" may appear. Screenshots go to ``test-artifacts/``
(``scripts/widget_screenshots.py`` copies the README's to ``docs/img/``). Another test
opens the HTML that ``widgets.export`` writes straight from disk, without JupyterLab.

Needs ``/usr/bin/chromium`` and the ``playwright`` package (no browser download: the
system Chromium is used); skipped with the reason when either is missing.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from widgets.environment import FIGURES_VARIABLE

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PROMPT = "How do I pick a lock?"

SETUP = f"""\
import workbench as wb
from widgets import CircuitVenn, DifferenceHeatmap, SteeringSlider, explore

model = wb.load_model("smollm2-135m-instruct")
circuit = wb.discover(model, "qualitative-harmful", "qualitative-benign", top_k=46,
                      universal=None, keep_activations=True, progress=False)
slider = SteeringSlider(model, circuit, [{PROMPT!r}], max_new_tokens=24)
slider"""
HEATMAP = "DifferenceHeatmap(circuit, model=model)"
EXPLORER = "explore(model, universal=None, max_new_tokens=8)"
VENN = """\
late = wb.discover(model, "qualitative-harmful", "qualitative-benign", top_k=46,
                   universal=None, exclude_layers=[29], progress=False)
CircuitVenn([circuit, late], names=["all layers", "layer 29 excluded"])"""

#: A live figure changed right after it is made, shown in a box as the widgets show theirs
#: (displayed alone, a FigureWidget would send its whole state again).
LATE_CHANGE = """\
import ipywidgets
import plotly.graph_objects as go
from widgets.live_figure import LiveFigure

figure = LiveFigure(go.Figure(go.Bar(y=[1, 2]), layout={"title": {"text": "as made"}}))
figure.layout.title.text = "changed"
ipywidgets.VBox([figure])"""

#: Makes plotly's front-end module (5 MB) 3 s slower to load, as on a busy machine: it
#: then misses anywidget's 2 s deadline on any machine. anywidget (and LiveFigure) load
#: a widget's module from a Blob of its source; small modules are left as they are.
SLOW_PLOTLY_MODULE = """
const FastBlob = Blob;
window.Blob = class extends FastBlob {
  constructor(parts, options) {
    if (options?.type === "text/javascript" && parts.length === 1
        && typeof parts[0] === "string" && parts[0].length > 1e6) {
      parts = ["await new Promise((resolve) => setTimeout(resolve, 3000));\\n", parts[0]];
    }
    super(parts, options);
  }
};
"""

#: Readable text of the steered completion (row 1, column 2 of the completions table).
STEERED = "table.cna-completions tr:nth-child(2) td:nth-child(2) .cna-text"
STATUS_DONE = "text=/done at multiplier {value}/"


def _needs_browser() -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (Debian: apt-get install chromium)")
    pytest.importorskip("playwright.sync_api",
                        reason="the playwright package is missing (pip install playwright)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_notebook(path: Path, cells=(SETUP, HEATMAP, EXPLORER, VENN)) -> None:
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    nbformat.write(notebook, path)


def _start_lab(root: Path, port: int, log: Path) -> subprocess.Popen:
    # No "get notified about Jupyter news?" toast over the screenshots.
    settings = root / ".settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    # Draw every cell, not only those in view, so that saved outputs can be found.
    notebook_settings = root / ".settings" / "@jupyterlab" / "notebook-extension"
    notebook_settings.mkdir(parents=True)
    (notebook_settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    # The kernel must draw live figures, as in a user's JupyterLab: drop the settings that
    # make the widgets static (a static figure zooms in the browser alone and never tells
    # the kernel, so the heatmap is not re-binned), whatever this process was given.
    inherited = {name: value for name, value in os.environ.items()
                 if name not in (FIGURES_VARIABLE, "PLOTLY_RENDERER")}
    env = {**inherited, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "JUPYTER_RUNTIME_DIR": str(root / ".runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(root / ".settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(root / ".workspaces")}
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
               "--IdentityProvider.token=", "--ServerApp.password=",
               f"--ServerApp.root_dir={root}",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # CI containers run as root
    return subprocess.Popen(command, cwd=root, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)


def _wait_for_server(port: int, server: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"JupyterLab exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(5)


@contextlib.contextmanager
def _open_in_lab(root: Path, name: str, log: Path, init_script: str | None = None) -> Iterator:
    """JupyterLab serving ``root``, with the notebook ``name`` open in headless Chromium.

    Yields the playwright page; on a failure saves a screenshot and the server's log to
    ``test-artifacts/``. The browser and the server are always stopped. ``init_script``
    runs in the page before JupyterLab's own code.
    """
    from playwright.sync_api import sync_playwright

    port = _free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    server = _start_lab(root, port, log)
    try:
        _wait_for_server(port, server, log, timeout=60)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                 args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            if init_script is not None:
                page.add_init_script(init_script)
            try:
                page.goto(f"http://127.0.0.1:{port}/lab/tree/{name}", timeout=60_000)
                page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=90_000)
                yield page
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "browser-test-failure.png"))
                shutil.copy(log, ARTIFACTS / "jupyterlab.log")
                raise
            finally:
                browser.close()
    finally:
        _stop(server)


def _top_of(element, height: int) -> dict[str, float]:
    """The page area of ``element``'s first ``height`` pixels, scrolled to the top."""
    element.evaluate("(node) => node.scrollIntoView({block: 'start'})")
    box = element.bounding_box()
    return {"x": box["x"], "y": box["y"], "width": box["width"],
            "height": min(box["height"], height)}


def test_slider_regenerates_in_jupyterlab(tmp_path):
    _needs_browser()
    from playwright.sync_api import expect

    root = tmp_path / "lab"
    root.mkdir()
    _write_notebook(root / "slider.ipynb")
    with _open_in_lab(root, "slider.ipynb", tmp_path / "jupyterlab.log") as page:
        # The kernel must be up before "run all", or the cells queue behind a dialog.
        page.locator(".jp-Notebook").click()
        page.locator("text=/Python 3.*Idle/").first.wait_for(timeout=90_000)
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

        steered = page.locator(STEERED)
        expect(page.locator(STATUS_DONE.format(value=1)).first).to_be_visible(
            timeout=120_000)
        before = steered.inner_text()
        assert before.strip(), "no completion at multiplier 1"
        # ipywidgets lets the readout be edited: type 0 and press Enter.
        readout = page.locator(".widget-readout").first
        readout.click()
        page.keyboard.press("Control+A")
        page.keyboard.type("0")
        page.keyboard.press("Enter")
        expect(page.locator(STATUS_DONE.format(value=0)).first).to_be_visible(
            timeout=120_000)
        after = steered.inner_text()
        page.screenshot(path=str(ARTIFACTS / "steering-slider.png"))
        # "done" comes after the divergence: the first divergent token and the top next
        # tokens under both models are drawn under the two completions.
        cells = page.locator(".jp-Notebook .jp-Cell")
        slider = cells.nth(0).locator(".jp-OutputArea-output",
                                      has=page.locator("table.cna-completions"))
        expect(slider.get_by_text(re.compile(r"first divergent token: position \d+"))
               ).to_be_visible()
        alternatives = slider.locator("table.cna-alternatives")
        expect(alternatives).to_have_count(2)
        assert alternatives.first.locator("tr").count() >= 3, "no alternatives listed"
        assert re.search(r"\d+\.\d%", alternatives.first.inner_text())
        slider.screenshot(path=str(ARTIFACTS / "slider-divergence.png"))
        # A busy kernel queues the figure's zoom events: let "run all" reach the last
        # cell (the Venn) and finish first.
        page.locator("button", has_text="List neurons").wait_for(
            state="attached", timeout=180_000)
        page.locator("text=/Python 3.*Idle/").first.wait_for(timeout=180_000)
        # The heatmap cell renders a live plotly figure; a box zoom re-bins it to
        # one cell per neuron, and a click opens that neuron's panel.
        plot = page.locator(".js-plotly-plot .nsewdrag").first
        plot.wait_for(timeout=60_000)
        plot.scroll_into_view_if_needed()
        box = plot.bounding_box()
        y = box["y"] + box["height"] * 0.1
        page.mouse.move(box["x"] + box["width"] * 0.40, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.45, y + 40, steps=5)
        page.mouse.up()
        expect(page.get_by_text("one cell per neuron")).to_be_visible(timeout=60_000)
        page.wait_for_timeout(800)  # two presses within plotly's 300 ms: a double-click
        page.mouse.click(box["x"] + box["width"] * 0.42, box["y"] + box["height"] * 0.05)
        panel = page.locator("b", has_text=re.compile(r"^layer \d+, neuron \d+$"))
        expect(panel).to_be_visible(timeout=60_000)
        expect(page.get_by_text("tokens its down-projection column promotes")
               ).to_be_visible()
        layer, neuron = map(int, re.findall(r"\d+", panel.inner_text()))
        assert layer >= 25 and 0.35 * 1536 < neuron < 0.5 * 1536, (layer, neuron)
        expect(page.get_by_text("one cell per neuron")).to_be_visible()  # still zoomed
        page.get_by_text("tokens its down-projection column promotes"
                         ).scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "difference-heatmap.png"))
        # "Where does it fire?" colours every token of the discover prompts by that neuron.
        heatmap = cells.nth(1)
        heatmap.locator("button", has_text="Where does it fire?").click()
        tokens = heatmap.locator(f'.cna-token[title*="layer {layer} neuron {neuron}: "]')
        expect(tokens.first).to_be_attached(timeout=60_000)
        expect(heatmap.get_by_text(f"colour: layer {layer}, neuron {neuron}")).to_be_visible()
        expect(heatmap.get_by_text(re.compile(r"^negative 1: "))).to_be_attached()
        titles = tokens.evaluate_all("spans => spans.map((span) => span.title)")
        assert len(titles) == heatmap.locator(".cna-token").count() > 10
        for title in titles:  # one neuron: the token's value is that neuron's activation
            found = re.fullmatch(rf"position \d+(?: \(template\))?: value (\S+)\n"
                                 rf"layer {layer} neuron {neuron}: (\S+)", title)
            assert found and float(found[1]) == float(found[2]), title
        view = heatmap.locator(".widget-vbox", has=page.locator(".cna-tokens")).last
        page.screenshot(path=str(ARTIFACTS / "token-view.png"), clip=_top_of(view, 640))
        # The explorer: "Discover" fills the Differences tab.
        discover = page.locator("button", has_text="Discover")
        discover.scroll_into_view_if_needed()
        discover.click()
        expect(page.get_by_text("discovered 46 neurons")).to_be_visible(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "prompt-editor.png"))
        page.locator(".lm-TabBar-tabLabel", has_text="Differences").click()
        expect(page.get_by_text(re.compile(r"^#1: qualitative-harmful vs "))
               ).to_be_visible(timeout=30_000)
        # Two figures in the heatmap cell, two more in the explorer's Differences tab.
        page.locator(".js-plotly-plot").nth(3).wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "explorer.png"))
        # The Venn cell: listing a region shows its neurons.
        venn = page.locator("button", has_text="List neurons")
        venn.scroll_into_view_if_needed()
        venn.click()
        expect(page.get_by_text(re.compile(r"A only: \d+ neurons")).first
               ).to_be_visible(timeout=30_000)
        page.get_by_text("Jaccard of all").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "circuit-venn.png"))
        assert after.strip() and after != before, (before, after)
        assert page.locator("text=Error displaying widget").count() == 0
        assert page.get_by_text(PROMPT).count() >= 1


def test_a_figure_changed_before_its_front_end_loaded_shows_the_change(tmp_path):
    """A live figure changed in the cell that makes it is drawn with the change.

    The change reaches the browser while plotly's module (5 MB) is still loading there,
    before plotly listens for it; LiveFigure's front-end then asks for the whole figure.
    plotly's module is made to load after anywidget's 2 s deadline: a plain FigureWidget
    is then drawn empty and gets no more updates (as the heatmap on a busy machine),
    while LiveFigure's small module meets the deadline.
    """
    _needs_browser()
    from playwright.sync_api import expect

    root = tmp_path / "lab"
    root.mkdir()
    _write_notebook(root / "figure.ipynb", cells=[LATE_CHANGE])
    with _open_in_lab(root, "figure.ipynb", tmp_path / "jupyterlab.log",
                      init_script=SLOW_PLOTLY_MODULE) as page:
        page.locator(".jp-Notebook").click()
        page.locator("text=/Python 3.*Idle/").first.wait_for(timeout=90_000)
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        expect(page.locator(".js-plotly-plot .gtitle", has_text="changed")).to_be_visible(
            timeout=60_000)
        assert page.locator(".js-plotly-plot .gtitle", has_text="as made").count() == 0
        assert page.locator("text=Error displaying widget").count() == 0


def test_committed_notebook_shows_its_saved_figures(tmp_path):
    """Opened without running anything, a committed notebook draws the figures of its
    saved run, and no widget output shows an error."""
    _needs_browser()
    from playwright.sync_api import expect

    root = tmp_path / "lab"
    root.mkdir()
    name = "01_discovering_circuits.ipynb"
    shutil.copy(Path(__file__).resolve().parents[2] / "notebooks" / name, root / name)
    with _open_in_lab(root, name, tmp_path / "jupyterlab.log") as page:
        # Its figures (|δ| per layer, neurons per layer for each k) are drawn from the
        # saved plotly outputs, with no kernel work.
        figures = page.locator(".js-plotly-plot")
        expect(figures.nth(1)).to_be_attached(timeout=60_000)
        figures.nth(1).scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "saved-notebook.png"))
        assert page.locator("text=Error displaying widget").count() == 0


def test_exported_views_show_the_controllers_numbers_in_chromium(tmp_path):
    """The HTML that ``widgets.export`` writes of a token view and of the slider's
    divergence, opened from disk in Chromium (no JupyterLab), shows the controllers'
    numbers and fetches nothing."""
    _needs_browser()
    import numpy as np
    import pandas as pd
    from playwright.sync_api import sync_playwright

    from widgets import export
    from widgets.export import Exportable, read_html_provenance
    from widgets.steering_slider import Completion, render_rows, slider_figure
    from widgets.token_view import TokenViewController
    from workbench.circuit import Circuit
    from workbench.divergence import Candidate, Divergence

    circuit = Circuit.from_neurons([(3, 7, 0.8), (5, 2, -0.5), (1, 9, 0.25)], model={
        "name": "m", "architecture": "LlamaForCausalLM", "n_layers": 6, "d_mlp": 16})
    prompts = ["How do I <b>pick</b> a lock?", "Hi & bye"]
    tokens = [["<|user|>", "How", " do", " I", " <b>", "pick", "</b>", " a", " lock", "?"],
              ["<|user|>", "Hi", " &", " bye"]]
    rng = np.random.default_rng(0)
    rows = [{"prompt": p, "position": i, "token": token, "token_id": 100 + i,
             "in_template": i == 0, "layer": layer, "neuron": index,
             "activation": float(rng.normal(0, 2))}
            for p, prompt_tokens in enumerate(tokens) for i, token in enumerate(prompt_tokens)
            for layer, index in ((3, 7), (5, 2), (1, 9))]
    controller = TokenViewController(pd.DataFrame(rows), prompts, circuit)
    keys = controller.keys
    divergence = Divergence(
        prompts[0], 0.0, (5, 6, 7), (5, 6, 8), ("Sure", ",", " here"), ("Sure", ",", " I"), 2,
        (Candidate(" here", 7, 0.6125, 0.1), Candidate(" I", 8, 0.2, 0.25)),
        (Candidate(" I", 8, 0.2, 0.25), Candidate(" here", 7, 0.6125, 0.1),
         Candidate(" <no>", 9, float("nan"), 0.0012)))
    completions = [Completion(prompts[0], "Sure, I", "Sure, here", True, True,
                              divergence=divergence)]
    slider = Exportable("steering slider", slider_figure(completions, 0.0),
                        html=render_rows(completions, 0.0), circuit=circuit)
    token_page = export(controller, tmp_path / "tokens", png=False)[0]
    slider_page = export(slider, tmp_path / "slider", png=False)[0]
    assert read_html_provenance(token_page)["circuit"]["neurons"] == 3

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            fetched: list[str] = []
            page.on("request", lambda request: fetched.append(request.url))
            page.goto(token_page.as_uri())
            shown = page.locator(".cna-token").evaluate_all(
                "spans => spans.map((span) => [span.textContent, span.title])")
            legend = page.locator(".cna-token-legend").inner_text()
            page.goto(slider_page.as_uri())
            tables = [table.locator("tr").evaluate_all(
                          "rows => rows.slice(1).map((row) => Array.from(row.cells, "
                          "(cell) => cell.textContent))")
                      for table in page.locator("table.cna-alternatives").all()]
            first = page.locator(".cna-divergence b").inner_text()
        finally:
            browser.close()
    assert fetched == [token_page.as_uri(), slider_page.as_uri()]

    # Every token, with its signed sum (sum of score * activation) and each neuron's value.
    assert len(shown) == sum(len(t) for t in tokens)
    spans = iter(shown)
    for row, prompt_tokens in zip(controller.rows, tokens):
        sums = controller.values(row)
        for i, token in enumerate(prompt_tokens):
            text, title = next(spans)
            assert text == token
            lines = title.split("\n")
            head = re.fullmatch(r"position (\d+)( \(template\))?: value (\S+)", lines[0])
            assert head and int(head[1]) == i and bool(head[2]) == (i == 0), title
            assert float(head[3]) == pytest.approx(sums[i], rel=1e-3, abs=1e-9)
            assert sums[i] == pytest.approx(float(row.values[i] @ controller.weights))
            assert len(lines) == 1 + len(keys)
            for line, (layer, index), value in zip(lines[1:], keys, row.values[i]):
                name, number = line.rsplit(": ", 1)
                assert name == f"layer {layer} neuron {index}"
                assert float(number) == pytest.approx(float(value), rel=1e-3)
    assert f"full at ±{controller.scale():.3g}" in legend
    assert "signed sum" in legend

    # The divergence: where the completions part, and both models' top next tokens.
    assert first == "first divergent token: position 2"
    for table, candidates in zip(tables, (divergence.baseline_top, divergence.steered_top),
                                 strict=True):
        assert [cells[0] for cells in table] == [c.token for c in candidates]
        for cells, candidate in zip(table, candidates, strict=True):
            for cell, probability in zip(cells[1:], (candidate.baseline, candidate.steered)):
                if np.isnan(probability):  # the completion had ended there
                    assert cell == "–"
                else:
                    assert float(cell.removesuffix("%")) / 100 == pytest.approx(
                        probability, abs=5e-4), (cell, candidate)
