"""Search a model for its refusal gate and write every trial, its timing and the docs' table.

Runs :class:`workbench.search.GateSearch` until the study in ``--out`` holds ``--trials``
finished trials (a rerun with a larger ``--trials`` extends it; one that is cut off resumes),
then writes under ``--out`` (default ``results/search/<model>``):

- ``gate.db``: the Optuna study (``optuna.load_study(study_name="cna-gate-search",
  storage="sqlite:///gate.db")``, or ``cna search --study`` to add trials);
- ``trials.csv`` and ``pareto.csv``: every finished trial and the Pareto trials, with each
  trial's wall seconds and the share spent on the KL measurement;
- ``run.json``: the study's settings, the baseline, the command, the machine, and where the
  time went (model load, each contrast's discovery, the baseline, the trials).

``--render-docs`` rewrites the tables of ``docs/search.md`` from every model's files.

Example:
    python scripts/search_gate.py --model qwen2.5-coder-0.5b-instruct --trials 30 \\
        --heldout-n 20 --max-new-tokens 32
    python scripts/search_gate.py --render-docs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.io import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results" / "search"
DOC = REPO / "docs" / "search.md"
BEGIN = "<!-- search tables: begin (written by scripts/search_gate.py) -->"
END = "<!-- search tables: end -->"


def run(args: argparse.Namespace) -> Path:
    """Bring the study to ``args.trials`` finished trials and write its files."""
    import workbench as wb
    from workbench.search import GateSearch

    out: Path = args.out or RESULTS / args.model
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / "run.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    seconds: dict[str, Any] = record.get("seconds", {})

    started = time.perf_counter()
    model = wb.load_model(args.model)
    seconds["model_load"] = round(time.perf_counter() - started, 1)
    search = GateSearch(model, out / "gate.db", heldout_n=args.heldout_n,
                        max_new_tokens=args.max_new_tokens, seed=args.seed,
                        batch_size=args.batch_size)
    discovery = seconds.setdefault("discovery", {})
    for contrast in search.space.contrasts:
        cached = (search.folder / f"{contrast}.pt").is_file()
        began = time.perf_counter()
        search.ranking(contrast)
        if not cached:  # computed in this run (a cached one costs nothing)
            discovery[contrast] = round(time.perf_counter() - began, 1)
    if "baseline" not in search.study.user_attrs:
        began = time.perf_counter()
        search.baseline()
        seconds["baseline"] = round(time.perf_counter() - began, 1)
    record.update({
        "settings": search.study.user_attrs["settings"],
        "baseline": search.baseline(),
        "command": _command(args),
        "seconds": seconds,
        "conditions": args.conditions,
        "versions": {p: metadata.version(p) for p in ("torch", "transformers", "optuna")},
        "machine": {"python": platform.python_version(), "processor": platform.machine(),
                    "cores": len(os.sched_getaffinity(0))},
    })
    write_files(search, out, record)  # the timings so far survive an interruption
    try:
        missing = args.trials - len(search.trials())
        if missing > 0:
            search.run(missing)
    finally:  # Ctrl-C included: the finished trials are written
        write_files(search, out, record)
    return out


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this study from the repository's root."""
    words = ["--model", args.model, "--trials", str(args.trials), "--heldout-n",
             str(args.heldout_n), "--max-new-tokens", str(args.max_new_tokens),
             "--batch-size", str(args.batch_size), "--seed", str(args.seed)]
    if args.out is not None and "results" in args.out.parts:  # said from the root
        words += ["--out", str(Path(*args.out.parts[args.out.parts.index("results"):]))]
    return "python scripts/search_gate.py " + shlex.join(words)


def write_files(search: Any, out: Path, record: dict[str, Any]) -> None:
    """``trials.csv``, ``pareto.csv`` and ``run.json`` from the study's finished trials."""
    trials = search.trials()
    atomic_write_text(out / "trials.csv", trials.to_csv(index=False))
    atomic_write_text(out / "pareto.csv", search.pareto().to_csv(index=False))
    record["seconds"]["trials"] = round(float(trials["seconds"].sum()), 1) \
        if "seconds" in trials else None
    atomic_write_text(out / "run.json", json.dumps(record, indent=2) + "\n")


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def render_model(folder: Path) -> str:
    """Markdown: one model's baseline, every trial, the Pareto trials and the timing."""
    record = json.loads((folder / "run.json").read_text())
    trials = pd.read_csv(folder / "trials.csv")
    pareto = pd.read_csv(folder / "pareto.csv")
    settings, baseline = record["settings"], record["baseline"]
    model = settings["model"]
    n_neurons = model["n_layers"] * model["d_mlp"]
    lines = [f"### {model['name']}", "",
             f"`{record['command']}`: {len(trials)} trials, {settings['heldout']['n']} held-out "
             f"prompts a half, {settings['max_new_tokens']} new tokens, seed "
             f"{settings['seed']}; {record['conditions']}. Held-out harmful refusal at x1: "
             f"{_pct(baseline['refusal'])} (benign {_pct(baseline['benign_refusal'])}).", "",
             "| trial | contrast | size (band, signs) | x | refusal | random | benign | KL "
             "| random KL | seconds (KL) |", "|---|---|---|---|---|---|---|---|---|---|"]
    front = set(pareto["trial"])
    for row in trials.itertuples():
        size = f"{100 * row.size / n_neurons:.2g}%, {int(row.size):,} ({row.band}, {row.signs})"
        mark = "**" if row.trial in front else ""
        timing = (f"{row.seconds:.0f} ({row.kl_seconds:.0f})"
                  if "seconds" in trials and pd.notna(row.seconds) else "")
        lines.append(
            f"| {mark}{row.trial}{mark} | {row.contrast} | {size} | x{row.multiplier:g} | "
            f"{mark}{_pct(row.refusal)}{mark} | {_pct(row.random_refusal)} | "
            f"{_pct(row.benign_refusal)} | {row.kl:.3f} | {row.random_kl:.3f} | {timing} |")
    lines += ["", "Pareto trials (bold), most refusal removed beyond the random control "
              "first: " + ", ".join(
                  f"{int(r.trial)} ({_pct(r.refusal)}, random {_pct(r.random_refusal)}, KL "
                  f"{r.kl:.3f})" for r in pareto.itertuples()) + "."]
    seconds = record["seconds"]
    if seconds.get("trials"):
        kl = float(trials["kl_seconds"].sum())
        discovery = ", ".join(f"{name} {value:.0f} s"
                              for name, value in seconds.get("discovery", {}).items())
        lines += ["", f"Where the time went: model load {seconds['model_load']:.0f} s; "
                  f"discovery (once per contrast, kept beside the study) {discovery or 'cached'}; "
                  f"baseline {seconds.get('baseline', 0):.0f} s; {len(trials)} trials "
                  f"{seconds['trials']:.0f} s ({seconds['trials'] / len(trials):.0f} s a trial "
                  f"on average), of which generation {seconds['trials'] - kl:.0f} s and the KL "
                  f"measurements {kl:.0f} s ({100 * kl / seconds['trials']:.0f}%)."]
    return "\n".join(lines) + "\n"


def render_docs() -> None:
    """Rewrite the tables between the markers of docs/search.md from the results."""
    text = DOC.read_text()
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    parts = [render_model(folder) for folder in sorted(RESULTS.iterdir())
             if (folder / "run.json").is_file() and (folder / "trials.csv").is_file()]
    DOC.write_text(head + BEGIN + "\n\n" + "\n".join(parts) + "\n" + END + tail)
    print(f"wrote the tables of {len(parts)} model(s) into {DOC.relative_to(REPO)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--trials", type=int, default=30,
                        help="finished trials the study should hold (default 30)")
    parser.add_argument("--heldout-n", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--conditions", default="on 2 idle cores",
                        help="how the machine was used meanwhile, for the record")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--render-docs", action="store_true",
                        help="only rewrite the tables of docs/search.md")
    args = parser.parse_args(argv)
    if not args.render_docs:
        print(f"wrote {run(args)}", flush=True)
    render_docs()
    return 0


if __name__ == "__main__":
    sys.exit(main())
