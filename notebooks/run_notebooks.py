"""Execute the curated notebooks in place, so that they carry the outputs of a run.

    .venv/bin/python notebooks/run_notebooks.py          # every notebook, full settings
    .venv/bin/python notebooks/run_notebooks.py 02 05    # only those with these numbers
    CNA_FAST=1 .venv/bin/python notebooks/run_notebooks.py --out /tmp/fast  # quick check

Each notebook runs top to bottom in a fresh ``python3`` kernel, in a temporary working
folder (so files a notebook writes, such as ``circuit.json``, do not land in the
repository). Progress bars are dropped from the saved outputs, with their widget state
(they record a moment of the run, not a result). A FAST run must write its copies
elsewhere (``--out``): the committed notebooks carry full runs. The run's settings and
wall time go into the notebook's metadata (``cna_run``) and are printed. A failing cell
stops that notebook and leaves its file as it was.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from widgets.environment import FIGURES_VARIABLE

HERE = Path(__file__).resolve().parent
CELL_TIMEOUT_S = 7200  # notebook 05 runs the whole comparison in one cell
#: Figures are saved as plotly JSON plus HTML that loads plotly.js from its CDN. Plotly's
#: default in a kernel ("plotly_mimetype+notebook") would embed ~4 MB of plotly.js in each
#: notebook; JupyterLab draws the JSON itself, offline.
PLOTLY_RENDERER = "plotly_mimetype+notebook_connected"
#: The widgets draw static figures in saved runs: a live FigureWidget stores the whole
#: plotly.js bundle (~5 MB) in the notebook's widget state, once per figure. Opened and
#: run again in JupyterLab, they are live as usual.
WIDGET_FIGURES = "static"

#: A tqdm bar as text: "label:  40%|████      | 2/5 [00:01<00:02, ...]".
PROGRESS_BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
#: How saved widget state points at other models: a child ("IPY_MODEL_<id>") or a widget
#: shown inside an Output widget ("model_id": "<id>").
MODEL_REFERENCE = re.compile(r'IPY_MODEL_([0-9a-f]+)|"model_id": "([0-9a-f]+)"')


def is_progress_bar(output: dict) -> bool:
    """Whether an output is (only) a progress bar, as a widget or as stderr text.

    Example:
        >>> is_progress_bar({"output_type": "stream", "name": "stderr",
        ...                  "text": "sweep:  50%|#####     | 1/2 [00:01<00:01]\\r"})
        True
        >>> is_progress_bar({"output_type": "stream", "name": "stdout", "text": "42 neurons"})
        False
    """
    if output.get("output_type") == "stream":
        lines = [line for line in re.split(r"[\r\n]", output.get("text", "")) if line.strip()]
        return output.get("name") == "stderr" and bool(lines) and all(
            PROGRESS_BAR.search(line) for line in lines)
    data = output.get("data", {})
    return WIDGET_VIEW in data and bool(PROGRESS_BAR.search(str(data.get("text/plain", ""))))


def drop_progress_bars(nb: nbformat.NotebookNode) -> int:
    """Remove progress-bar outputs from every code cell; returns how many went."""
    dropped = 0
    for cell in nb.cells:
        if cell.cell_type == "code":
            kept = [output for output in cell.outputs if not is_progress_bar(output)]
            dropped += len(cell.outputs) - len(kept)
            cell.outputs = kept
    return dropped


def drop_orphan_widget_state(nb: nbformat.NotebookNode) -> int:
    """Keep only the saved widget models that a remaining output shows, with the models
    they refer to (``IPY_MODEL_<id>``); returns how many were dropped."""
    bundle = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {})
    state = bundle.get("state", {})
    wanted = [output["data"][WIDGET_VIEW]["model_id"] for cell in nb.cells
              if cell.cell_type == "code" for output in cell.outputs
              if WIDGET_VIEW in output.get("data", {})]
    keep: set[str] = set()
    while wanted:
        model_id = wanted.pop()
        if model_id in keep or model_id not in state:
            continue
        keep.add(model_id)
        wanted += [child or shown for child, shown in
                   MODEL_REFERENCE.findall(json.dumps(state[model_id]))]
    orphans = set(state) - keep
    for model_id in orphans:
        del state[model_id]
    return len(orphans)


def run(path: Path, out: Path) -> float:
    """Execute ``path`` and write it to ``out``; returns the wall time in seconds."""
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="cna-notebook-") as workdir:
        client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                                startup_timeout=120, resources={"metadata": {"path": workdir}})
        started = time.perf_counter()
        client.execute()
        seconds = time.perf_counter() - started
    drop_progress_bars(nb)
    drop_orphan_widget_state(nb)
    nb.metadata["cna_run"] = {
        "fast": os.environ.get("CNA_FAST", "0") == "1",
        "seconds": round(seconds, 1),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "cpu_count": os.cpu_count(),
    }
    nbformat.write(nb, out)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("numbers", nargs="*", help="notebook numbers, e.g. 00 05 (default: all)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the executed copies here (default: in place; required "
                             "with CNA_FAST=1)")
    args = parser.parse_args(argv)
    if os.environ.get("CNA_FAST", "0") == "1" and args.out is None:
        parser.error("CNA_FAST=1 would overwrite the committed full runs: give --out DIR")
    paths = sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
    unknown = set(args.numbers) - {p.name[:2] for p in paths}
    if unknown:
        parser.error(f"no notebook numbered {', '.join(sorted(unknown))} in {HERE}")
    # Only once the run is accepted: a refused run must leave the caller's environment as
    # it was (the tests call main() in-process, and later tests' kernels inherit it).
    os.environ.setdefault("PLOTLY_RENDERER", PLOTLY_RENDERER)  # the kernels inherit these
    os.environ.setdefault(FIGURES_VARIABLE, WIDGET_FIGURES)
    if args.numbers:
        paths = [p for p in paths if p.name[:2] in args.numbers]
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for path in paths:
        print(f"{path.name} ...", flush=True)
        try:
            seconds = run(path, (args.out or HERE) / path.name)
        except Exception as error:  # report and go on with the next notebook
            failed.append(path.name)
            print(f"{path.name}: FAILED: {type(error).__name__}: {str(error)[-2000:]}", flush=True)
            continue
        size = ((args.out or HERE) / path.name).stat().st_size / 1e6
        print(f"{path.name}: {seconds:.0f} s, {size:.2f} MB", flush=True)
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
