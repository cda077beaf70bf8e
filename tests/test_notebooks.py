"""The curated notebooks: their parameters cell, their build script (which writes them from
notebooks/src/), and a FAST run of each.

The execution test (marked ``notebooks``) runs every notebook top to bottom with
``CNA_FAST=1`` in a fresh ``python3`` kernel of this interpreter, in a temporary working
directory, failing on any cell error. It also proves the notebooks stay offline when
``MODEL`` is an embedded model: a first injected cell makes every socket connection and
name lookup to a non-loopback address fail *and* records it (so an attempt that library
code catches and survives is still seen), and a last injected cell reports the record.
Loopback stays open because the kernel talks to this process over local ZMQ sockets.

``CNA_NOTEBOOK_MODEL`` overrides every notebook's ``MODEL`` (as papermill would, with a
cell after the parameters cell).

The committed notebooks must carry the outputs of a full run (``run_notebooks.py``), and
the build script must not lose them when only prose changes.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import workbench
from workbench.embedded import EMBEDDED

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("jupytext")  # build_notebooks.py reads the sources with it

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
sys.path.insert(0, str(NOTEBOOK_DIR))
import build_notebooks as builder  # noqa: E402
import run_notebooks as runner  # noqa: E402

NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
PARAMETERS = ("MODEL", "FAST", "DEVICE", "DTYPE")
CELL_TIMEOUT_S = 600

#: Installed as the first cell of every executed notebook.
NETWORK_GUARD = textwrap.dedent('''
    # Injected by tests/test_notebooks.py: refuse and record any non-loopback connection.
    import ipaddress as _cna_ip
    import socket as _cna_socket

    _cna_network_attempts = []

    def _cna_is_local(host):
        if host is None or host == "" or str(host).lower() == "localhost":
            return True
        try:
            return _cna_ip.ip_address(str(host).split("%")[0]).is_loopback
        except ValueError:
            return False

    def _cna_refuse(what):
        _cna_network_attempts.append(what)
        raise OSError(f"network access refused by tests/test_notebooks.py: {what}")

    def _cna_guard_address(original):
        def guarded(self, address, *args):
            if isinstance(address, tuple) and not _cna_is_local(address[0]):
                _cna_refuse(f"{original.__name__} {address!r}")
            return original(self, address, *args)
        return guarded

    def _cna_guard_sendto(original):
        def guarded(self, data, *args):
            address = args[-1] if args else None
            if isinstance(address, tuple) and not _cna_is_local(address[0]):
                _cna_refuse(f"sendto {address!r}")
            return original(self, data, *args)
        return guarded

    def _cna_guard_lookup(original):
        def guarded(host, *args, **kwargs):
            if not _cna_is_local(host.decode() if isinstance(host, bytes) else host):
                _cna_refuse(f"{original.__name__} {host!r}")
            return original(host, *args, **kwargs)
        return guarded

    _cna_socket.socket.connect = _cna_guard_address(_cna_socket.socket.connect)
    _cna_socket.socket.connect_ex = _cna_guard_address(_cna_socket.socket.connect_ex)
    _cna_socket.socket.sendto = _cna_guard_sendto(_cna_socket.socket.sendto)
    _cna_socket.getaddrinfo = _cna_guard_lookup(_cna_socket.getaddrinfo)
    _cna_socket.gethostbyname = _cna_guard_lookup(_cna_socket.gethostbyname)
''').strip()

#: Appended as the last cell: what the test checks after the run.
REPORT = textwrap.dedent('''
    # Injected by tests/test_notebooks.py: report the kernel and any network attempts.
    import json as _cna_json, sys as _cna_sys
    print("CNA-NOTEBOOK-REPORT " + _cna_json.dumps({
        "prefix": _cna_sys.prefix, "executable": _cna_sys.executable,
        "network_attempts": _cna_network_attempts}))
''').strip()


def _ids(path: Path) -> str:
    return path.stem


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _parameters_cells(nb) -> list:
    return [cell for cell in nb.cells if "parameters" in cell.metadata.get("tags", [])]


def _assignments(source: str) -> dict[str, ast.expr]:
    """Top-level ``NAME = value`` assignments of a cell."""
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found[node.target.id] = node.value
    return found


def _default_model(nb) -> str:
    return ast.literal_eval(_assignments(_parameters_cells(nb)[0].source)["MODEL"])


def test_notebooks_exist():
    assert len(NOTEBOOKS) >= 9, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_parameters_cell(path, monkeypatch):
    nb = _read(path)
    tagged = _parameters_cells(nb)
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters', expected 1"
    cell = tagged[0]
    assert cell.cell_type == "code"
    assigned = _assignments(cell.source)
    assert set(assigned) == set(PARAMETERS), \
        f"{path.name}: the parameters cell defines {sorted(assigned)}, expected {PARAMETERS}"
    model = _default_model(nb)
    assert model in workbench.EMBEDDED, f"{path.name}: MODEL default {model!r} is not embedded"

    # FAST follows CNA_FAST; DEVICE and DTYPE default to automatic (None).
    for value, expected in ((None, False), ("0", False), ("1", True)):
        if value is None:
            monkeypatch.delenv("CNA_FAST", raising=False)
        else:
            monkeypatch.setenv("CNA_FAST", value)
        namespace: dict = {}
        exec(compile(cell.source, f"{path.name}:parameters", "exec"), namespace)
        assert namespace["FAST"] is expected
        assert namespace["DEVICE"] is None and namespace["DTYPE"] is None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_layout(path):
    """Title first, the Colab-only install cell second, no stored outputs of a failed run."""
    nb = _read(path)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    install = nb.cells[1]
    assert install.cell_type == "code" and 'if "google.colab" in sys.modules:' in install.source
    pip_lines = [line for line in install.source.splitlines() if "%pip" in line]
    assert pip_lines and all(line.startswith("    ") for line in pip_lines), \
        "every %pip line must sit inside the Colab check"
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            assert output.get("output_type") != "error", f"{path.name} holds an error output"


def test_build_script_matches_notebooks():
    """The committed notebooks hold exactly the cells the build script writes."""
    result = subprocess.run([sys.executable, str(NOTEBOOK_DIR / "build_notebooks.py"), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_committed_notebooks_carry_a_full_run(path):
    """A reader sees results without running anything: every code cell was executed in
    one full (not FAST) run, and no progress bar was saved."""
    nb = _read(path)
    run = nb.metadata.get("cna_run")
    assert run is not None and run["fast"] is False, \
        f"{path.name} holds no full run: python notebooks/run_notebooks.py {path.name[:2]}"
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    counts = [cell.execution_count for cell in code_cells]
    assert counts == list(range(1, len(code_cells) + 1)), \
        f"{path.name}: cells were not executed in one run from the top ({counts})"
    for cell in code_cells:
        assert not any(runner.is_progress_bar(output) for output in cell.outputs)
    assert runner.drop_orphan_widget_state(nb) == 0, f"{path.name} keeps unused widget state"


def test_notebooks_stay_small():
    total = sum(path.stat().st_size for path in NOTEBOOKS)
    assert total < 15e6, f"the notebooks hold {total / 1e6:.1f} MB of outputs (limit 15 MB)"


def test_rebuilding_keeps_outputs_of_unchanged_code_cells():
    name = "00_quickstart"
    old = builder.build(name)
    first, second = [i for i, cell in enumerate(old.cells) if cell.cell_type == "code"][:2]
    for index in (first, second):
        old.cells[index].outputs = [nbformat.v4.new_output("stream", text=f"ran {index}")]
        old.cells[index].execution_count = index
    old.metadata["cna_run"] = {"fast": False}
    new = builder.build(name)
    new.cells[second].source += "\nprint('changed')"
    builder.keep_outputs(old, new)
    assert new.cells[first].outputs[0]["text"] == f"ran {first}"
    assert new.cells[first].execution_count == first
    assert new.cells[second].outputs == [] and new.cells[second].execution_count is None
    assert new.metadata["cna_run"] == {"fast": False}


def test_orphan_widget_state_is_dropped_and_shown_widgets_are_kept():
    def view(model_id):
        return {"output_type": "display_data",
                "data": {runner.WIDGET_VIEW: {"model_id": model_id}}}

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x")]
    nb.cells[0].outputs = [nbformat.from_dict(view("b0"))]
    nb.metadata["widgets"] = {runner.WIDGET_STATE: {"state": {
        "b0": {"state": {"children": ["IPY_MODEL_c1", "IPY_MODEL_a2"]}},  # shown: a box
        "c1": {"state": {}},
        "a2": {"state": {"outputs": [view("d3")]}},  # an Output widget showing d3
        "d3": {"state": {}},
        "e4": {"state": {"children": ["IPY_MODEL_f5"]}},  # a dropped progress bar
        "f5": {"state": {}},
    }}}
    assert runner.drop_orphan_widget_state(nb) == 2
    assert set(nb.metadata["widgets"][runner.WIDGET_STATE]["state"]) == {"b0", "c1", "a2", "d3"}


def test_a_fast_run_must_not_overwrite_the_committed_notebooks(monkeypatch, capsys):
    monkeypatch.delenv("CNA_FAST", raising=False)
    before = dict(os.environ)
    monkeypatch.setenv("CNA_FAST", "1")
    with pytest.raises(SystemExit):
        runner.main(["00"])
    assert "--out" in capsys.readouterr().err
    monkeypatch.delenv("CNA_FAST")
    with pytest.raises(SystemExit):
        runner.main(["00", "99"])
    assert "no notebook numbered 99" in capsys.readouterr().err
    # A refused run sets nothing: later tests' kernels (the browser test's JupyterLab)
    # inherit this process's environment, and a leaked CNA_WIDGETS_FIGURES=static made
    # the widgets there draw static figures, which report no zoom or click.
    assert dict(os.environ) == before


@pytest.mark.parametrize("output, expected", [
    ({"output_type": "stream", "name": "stderr",
      "text": "sweep:  40%|####      | 2/5 [00:01<00:02, 1.2it/s]\rsweep: 100%|##| 5/5 [00:03]\n"},
     True),
    ({"output_type": "stream", "name": "stderr", "text": "UserWarning: something\n"}, False),
    ({"output_type": "stream", "name": "stdout", "text": "46 neurons\n"}, False),
    ({"output_type": "display_data", "data": {
        "application/vnd.jupyter.widget-view+json": {"model_id": "x"},
        "text/plain": "collecting:   0%|          | 0/8 [00:00<?, ?prompt/s]"}}, True),
    ({"output_type": "display_data", "data": {
        "application/vnd.jupyter.widget-view+json": {"model_id": "x"},
        "text/plain": "SteeringSlider(...)"}}, False),
])
def test_progress_bars_are_recognised(output, expected):
    assert runner.is_progress_bar(output) is expected


def test_network_guard_refuses_remote_and_allows_loopback():
    """The guard injected into the executed notebooks is not vacuous."""
    script = NETWORK_GUARD + textwrap.dedent('''

        import socket
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        socket.create_connection(server.getsockname(), timeout=5).close()  # loopback: allowed
        for attempt in (lambda: socket.create_connection(("192.0.2.1", 80), timeout=1),
                        lambda: socket.getaddrinfo("huggingface.co", 443)):
            try:
                attempt()
            except OSError as error:
                assert "refused by tests/test_notebooks.py" in str(error), error
            else:
                raise AssertionError("a remote connection went through the guard")
        assert len(_cna_network_attempts) == 2, _cna_network_attempts
        print("ok")
    ''')
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def _model_override() -> str | None:
    """The MODEL to inject, if any (see the module docstring)."""
    return os.environ.get("CNA_NOTEBOOK_MODEL") or None


def _prepare(nb, model: str | None):
    """A copy of ``nb`` with the guard first, the MODEL override and the report last."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    index = nb.cells.index(_parameters_cells(nb)[0])
    if model is not None:
        override = nbformat.v4.new_code_cell(
            f"MODEL = {model!r}  # injected by tests/test_notebooks.py", id="injected-model")
        override.metadata["tags"] = ["injected-parameters"]
        nb.cells.insert(index + 1, override)
    nb.cells.insert(0, nbformat.v4.new_code_cell(NETWORK_GUARD, id="injected-guard"))
    nb.cells.append(nbformat.v4.new_code_cell(REPORT, id="injected-report"))
    return nb


def _report(nb) -> dict:
    for output in nb.cells[-1].get("outputs", []):
        for line in output.get("text", "").splitlines():
            if line.startswith("CNA-NOTEBOOK-REPORT "):
                return json.loads(line.split(" ", 1)[1])
    raise AssertionError("the report cell printed nothing")


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_runs_fast_and_offline(path, tmp_path, monkeypatch, capsys, record_property):
    import nbclient

    nb = _read(path)
    default = _default_model(nb)
    model = _model_override()
    if model is None:
        assert default in EMBEDDED, "the offline check needs an embedded MODEL"
    monkeypatch.setenv("CNA_FAST", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    for name in ("CNA_JUDGE_BASE_URL", "CNA_JUDGE_MODEL"):
        monkeypatch.delenv(name, raising=False)  # the judge notebook must skip, not call out

    prepared = _prepare(nb, model)
    client = nbclient.NotebookClient(prepared, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                                     startup_timeout=120,
                                     resources={"metadata": {"path": str(tmp_path)}})
    started = time.perf_counter()
    try:
        client.execute()
    finally:
        seconds = time.perf_counter() - started
        nbformat.write(prepared, tmp_path / path.name)  # the executed copy, for inspection
        record_property("seconds", round(seconds, 1))
        with capsys.disabled():
            print(f"\n{path.name}: {seconds:.1f} s (MODEL={model or default}, FAST)")

    report = _report(prepared)
    assert Path(report["prefix"]).resolve() == Path(sys.prefix).resolve(), \
        f"the kernel ran {report['executable']}, not this environment's Python {sys.executable}"
    assert report["network_attempts"] == [], \
        f"{path.name} tried to reach the network: {report['network_attempts']}"
