"""Trials of the late-MLP safety recipe: train, then measure refusal and CNA ablation.

Each trial is one :class:`~workbench.safety.late_mlp.LateMlpRecipe` (given as JSON
overrides on the command line). For each it reports, greedy with ``--new-tokens`` tokens:

- refusal at x1 on the held-out JBB halves (50 harmful, 50 benign), benign quality;
- :func:`~workbench.safety.metrics.gate_metrics`: for circuits of 0.1%, 0.5% and 1% of
  MLP neurons discovered on the JBB discover halves, held-out harmful refusal and quality
  at x0, beside a random control of the same shape (seed 0) at x0.

Rows are appended to ``--out`` (JSON lines) as each trial ends, so a long run can be
read while it goes on. The self-distilled training pairs are built once and cached in
``--data`` (they depend only on the seed and subset sizes, not on the trial).

Example:
    python scripts/late_mlp_trials.py --out trials.jsonl \
        '{"layers": 4}' '{"layers": 6, "learning_rate": 2e-4}'
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from workbench import generate, load_model
from workbench.evaluation.benchmarks import load_benchmark
from workbench.evaluation.quality import mean_quality
from workbench.evaluation.refusal import refusal_rate
from workbench.safety import build_data
from workbench.safety.data import SafetyData
from workbench.safety.late_mlp import LateMlpRecipe
from workbench.safety.lora import load_tuned, safety_tune
from workbench.safety.metrics import gate_metrics


def cached_data(model, recipe: LateMlpRecipe, path: Path) -> SafetyData:
    key = {"seed": recipe.seed, "n_harmful": recipe.n_harmful, "n_benign": recipe.n_benign,
           "benign_new_tokens": recipe.benign_new_tokens,
           "overlap_threshold": recipe.overlap_threshold, "model": model.name}
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored["key"] == key:
            fields = stored["data"]
            return SafetyData([tuple(p) for p in fields["harmful"]],
                              [tuple(p) for p in fields["benign"]], fields["removed"],
                              fields["seed"], fields["unused_benign"])
    data = build_data(lambda ps: generate(model, ps, max_new_tokens=recipe.benign_new_tokens,
                                          batch_size=32, progress=True),
                      seed=recipe.seed, overlap_threshold=recipe.overlap_threshold,
                      n_harmful=recipe.n_harmful, n_benign=recipe.n_benign)
    path.write_text(json.dumps({"key": key, "data": asdict(data)}))
    return data


def measure(tuned, new_tokens: int) -> dict:
    """x1 refusal and quality on held-out JBB benign, and the gate (see ``gate_metrics``)."""
    benign = generate(tuned, load_benchmark("jbb-benign", split="heldout"),
                      max_new_tokens=new_tokens, batch_size=25)
    gate = gate_metrics(tuned, max_new_tokens=new_tokens, batch_size=25, progress=False)
    return {"x1_harmful": gate["x1_refusal"], "x1_benign": refusal_rate(benign),
            "x1_quality_benign": round(mean_quality(benign), 3), "gate": gate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trials", nargs="+", help="JSON overrides of LateMlpRecipe")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=Path("late-mlp-data.json"))
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--keep", type=Path, default=None,
                        help="folder to keep each trial's delta in (trial-N subfolders)")
    parser.add_argument("--measure-only", action="store_true",
                        help="the trials are folders kept by an earlier run: measure them")
    args = parser.parse_args()
    base = load_model("smollm2-135m-instruct")
    if args.measure_only:
        for folder in map(Path, args.trials):
            manifest = json.loads((folder / "manifest.json").read_text())
            row = {"trial": str(folder), "recipe": manifest["hyperparameters"],
                   "train_seconds": manifest["training"]["total_seconds"],
                   "first_loss": round(manifest["training"]["first_loss"], 3),
                   "last_loss": round(manifest["training"]["last_loss"], 3),
                   "weight_change": manifest["weight_change"],
                   **measure(load_tuned(base, folder, name="trial"), args.new_tokens)}
            with args.out.open("a") as stream:
                stream.write(json.dumps(row) + "\n")
            print(json.dumps(row, indent=1), flush=True)
        return
    for number, text in enumerate(args.trials):
        overrides = json.loads(text)
        if "matrices" in overrides:
            overrides["matrices"] = tuple(overrides["matrices"])
        recipe = LateMlpRecipe(**overrides)
        data = cached_data(base, recipe, args.data)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as scratch:
            folder = (args.keep / f"trial-{number}") if args.keep else Path(scratch) / "delta"
            manifest = safety_tune(folder, model=base, recipe=recipe, evaluate=False,
                                   data=data, progress=False)
            train_seconds = time.perf_counter() - started
            tuned = load_tuned(base, folder, name="trial")
            row = {"trial": overrides, "recipe": asdict(recipe),
                   "train_seconds": round(train_seconds, 1),
                   "first_loss": round(manifest["training"]["first_loss"], 3),
                   "last_loss": round(manifest["training"]["last_loss"], 3),
                   "weight_change": manifest["weight_change"], **measure(tuned, args.new_tokens)}
        row["seconds"] = round(time.perf_counter() - started, 1)
        with args.out.open("a") as stream:
            stream.write(json.dumps(row) + "\n")
        print(json.dumps(row, indent=1), flush=True)


if __name__ == "__main__":
    main()
