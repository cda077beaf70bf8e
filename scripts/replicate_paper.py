"""The paper's refusal protocol on one model, every figure written to files as it comes out.

"Targeted Neuron Modulation via Contrastive Pair Search" (Nous Research, 2026) discovers a
refusal circuit from 100 harmful + 100 benign JBB prompts, ablates it (x0) and reports
refusal, output quality and MMLU beside a random circuit. This script runs that protocol,
and the variations that tell whether a model has a sparse refusal gate, on any model the
workbench loads (made for the two embedded Qwen2.5-Coder-Instruct models).

Stages (``--stages``, run in the order given; each is resumable):

- ``split``: circuits from the JBB *discover* halves (50 + 50), measured on the *held-out*
  halves: the JBB pair (the paper's contrast) and the refusal-filtered pair (the discover
  prompts the model refuses vs the benign ones it answers, :func:`filter_by_behaviour`),
  each at every ``--sizes`` (a prefix of one ranking) beside a random circuit of the same
  per-layer shape (seed ``--seed``), at x0; held-out harmful refusal and quality.
- ``benign``: over-refusal on the held-out benign half at x1 and under the x0 circuits.
- ``amplify``: x2 (does amplifying the circuit strengthen refusal?) on both held-out halves.
- ``caa``: the CAA vector of the same discover halves at m = 0 and 2 (alpha = -1, +1).
- ``direction``: the refusal direction (Arditi et al.) from the discover halves, ablated:
  selected by ablation from the JBB pair and from the refusal-filtered pair, and by the
  cheap separation criterion from the JBB pair.
- ``full``: the paper's exact protocol: discovery on all 100 + 100 JBB prompts, measured on
  the same 100 harmful prompts (in-sample, as the paper does), x0 and random control.
- ``strongreject``: keyword refusal on a seeded sample of StrongREJECT prompts.
- ``mmlu``: zero-shot MMLU accuracy on a seeded sample of questions, x1 and x0.
- ``kl``: KL divergence on harmless prompts (:class:`HarmlessDrift`'s defaults) of every
  circuit of ``split``, and its random control, at x0: damage that the 4-gram quality
  score can miss.

Everything goes to ``--out`` (default ``results/replication/<model>``): one parquet file of
completions per stage (rows are appended as each batch ends, and a rerun generates only
what is missing), circuits as JSON, ``mmlu.csv``, ``summary.csv`` (one row per condition,
rebuilt from the files after every stage) and ``run.json`` (settings, seeds, versions, wall
time per stage). ``--render-docs`` writes the summary tables into ``docs/replication.md``.

Example:
    python scripts/replicate_paper.py --model qwen2.5-coder-0.5b-instruct
    python scripts/replicate_paper.py --model qwen2.5-coder-1.5b-instruct \\
        --stages split,amplify --sizes 0.001,0.01
    python scripts/replicate_paper.py --render-docs     # tables of every model run so far
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.io import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results" / "replication"
DOC = REPO / "docs" / "replication.md"
STAGES = ("split", "benign", "amplify", "caa", "direction", "full", "strongreject", "mmlu",
          "kl")
DEFAULT_SIZES = (0.001, 0.01, 0.02, 0.05)
CONTRASTS = ("jbb-pair", "refusal-filtered")


class Run:
    """One model's replication: its loaded model, settings, circuits and output folder."""

    def __init__(self, args: argparse.Namespace) -> None:
        import workbench as wb

        self.args = args
        self.out: Path = args.out or RESULTS / args.model
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "circuits").mkdir(exist_ok=True)
        self.model = wb.load_model(args.model)
        self.sizes: list[float] = list(args.sizes)
        self.largest = max(self.sizes)
        self.record = self._read_record()

    # -- prompts -------------------------------------------------------------------------
    def half(self, name: str, split: str | None) -> Any:
        from workbench.evaluation import load_benchmark

        n = self.args.heldout_n if split == "heldout" else None
        return load_benchmark(name, split=split, n=n, seed=self.args.seed)

    # -- circuits, built once and kept ---------------------------------------------------
    def circuit(self, key: str, build: Callable[[], Any]) -> Any:
        from workbench import Circuit

        path = self.out / "circuits" / f"{key}.json"
        if path.is_file():
            circuit = Circuit.load(path)
            if len(circuit) >= round(self.largest * self.model.n_neurons):
                return circuit  # every size asked for is a prefix of it
        circuit = build()
        circuit.save(path)
        return circuit

    def jbb_circuit(self, split: str | None) -> Any:
        import workbench as wb

        key = "jbb-pair-" + (split or "all")
        return self.circuit(key, lambda: wb.discover(
            self.model, self.half("jbb-harmful", split), self.half("jbb-benign", split),
            fraction=self.largest))

    @functools.cached_property
    def refused_pair(self) -> Any:
        """The discover prompts the model refuses vs the benign ones it answers (once a run)."""
        from workbench.filtering import filter_by_behaviour

        pair = filter_by_behaviour(self.model, self.half("jbb-harmful", "discover"),
                                   self.half("jbb-benign", "discover"))
        print(pair.summary(), flush=True)
        return pair

    def filtered_circuit(self) -> Any:
        import workbench as wb

        def build() -> Any:
            pair = self.refused_pair
            return wb.discover(self.model, pair.positive, pair.negative, keep_if=pair,
                               fraction=self.largest, max_imbalance=None)

        return self.circuit("refusal-filtered-discover", build)

    # -- stages --------------------------------------------------------------------------
    def sweep(self, stage: str, interventions: list, multipliers: Sequence[float],
              benchmarks: list, sizes: Sequence[float] | None) -> pd.DataFrame:
        from workbench.evaluation import sweep

        return sweep(self.model, interventions, multipliers, benchmarks,
                     sizes=sizes, max_new_tokens=self.args.max_new_tokens,
                     batch_size=self.args.batch_size, out=self.out / f"{stage}.parquet")

    def circuit_interventions(self, *, filtered: bool = True) -> list:
        """CNA and random interventions of the discover-half circuits of ``--contrasts``."""
        from workbench.evaluation import Intervention

        seed = self.args.seed
        found = []
        if "jbb-pair" in self.args.contrasts:
            jbb = self.jbb_circuit("discover")
            found += [Intervention.cna(jbb, "cna:jbb-pair"),
                      Intervention.random(jbb, seed=seed, name="random:jbb-pair")]
        if filtered and "refusal-filtered" in self.args.contrasts:
            refused = self.filtered_circuit()
            found += [Intervention.cna(refused, "cna:refusal-filtered"),
                      Intervention.random(refused, seed=seed, name="random:refusal-filtered")]
        return found

    def stage_split(self) -> None:
        from workbench.evaluation import Intervention

        self.sweep("split", [Intervention.baseline(), *self.circuit_interventions()], [0.0],
                   [self.half("jbb-harmful", "heldout")], self.sizes)

    def stage_benign(self) -> None:
        from workbench.evaluation import Intervention
        from workbench.evaluation.interventions import CnaCircuit

        cna = [i for i in self.circuit_interventions() if type(i) is CnaCircuit]
        self.sweep("benign", [Intervention.baseline(), *cna], [0.0],
                   [self.half("jbb-benign", "heldout")], self._small_sizes())

    def stage_amplify(self) -> None:
        self.sweep("amplify", self.circuit_interventions(), [2.0],
                   [self.half("jbb-harmful", "heldout"), self.half("jbb-benign", "heldout")],
                   self._small_sizes())

    def stage_caa(self) -> None:
        import workbench as wb
        from workbench.evaluation import Intervention

        vector = wb.caa_vector(self.model, self.half("jbb-harmful", "discover"),
                               self.half("jbb-benign", "discover"))  # [n_layers, d_model]
        self.sweep("caa", [Intervention.caa(vector)], [0.0, 2.0],
                   [self.half("jbb-harmful", "heldout"), self.half("jbb-benign", "heldout")],
                   None)

    def stage_direction(self) -> None:
        """The refusal direction from the discover halves, ablated on both held-out halves.

        Three selections: Arditi et al.'s (by ablation, :func:`refusal_direction`'s
        default) from the JBB pair and from the refusal-filtered pair, and the cheap
        separation criterion (``cohen_d``) from the JBB pair.
        """
        from workbench.evaluation import Intervention

        harmful, benign = self.half("jbb-harmful", "discover"), self.half("jbb-benign",
                                                                          "discover")
        pair = self.refused_pair
        # Arditi et al.'s selection scores every (layer, position) candidate with three
        # forward passes over the validation prompts: on the JBB pair only the last
        # position is tried, to keep the stage's time within reach on a CPU (and on the
        # refusal-filtered pair too with --direction-positions 1). Each selection is saved
        # as it ends, so an interrupted stage resumes with the next.
        selections = {
            "direction:jbb-pair": (harmful, benign, "ablation", 1),
            "direction:jbb-pair:cohen-d": (harmful, benign, "cohen_d", None),
            "direction:refusal-filtered": (pair.positive, pair.negative, "ablation",
                                           self.args.direction_positions)}
        # Arditi et al.'s KL limit (0.1) loosened, as a sensitivity check (--direction-kl).
        for limit in self.args.direction_kl:
            selections[f"direction:refusal-filtered:kl-{limit:g}"] = (
                pair.positive, pair.negative, "ablation", self.args.direction_positions, limit)
        interventions = [Intervention.direction(self.direction(name, *how), name=name)
                         for name, how in selections.items()]
        self.sweep("direction", interventions, [0.0],
                   [self.half("jbb-harmful", "heldout"), self.half("jbb-benign", "heldout")],
                   None)

    def direction(self, name: str, positive: Any, negative: Any, criterion: str,
                  positions: int | None, kl_threshold: float | None = None) -> Any:
        """The direction ``name``, selected once and kept (with its candidates' scores)."""
        import torch

        import workbench as wb

        key = name.replace(":", "-")
        path = self.out / "circuits" / f"{key}.pt"
        if not path.is_file():
            started = time.perf_counter()
            found = wb.refusal_direction(self.model, positive, negative, criterion=criterion,
                                         positions=positions, kl_threshold=kl_threshold,
                                         max_imbalance=None)
            info = {"layer": found.layer, "position": found.position,
                    "criterion": found.criterion, "fallback": found.fallback,
                    "relaxed_filters": found.selection.get("relaxed_filters"),
                    "positions_tried": len({row["position"] for row in found.candidate_scores})
                    or 1, "positive": len(positive), "negative": len(negative),
                    "kl_threshold": found.selection.get("kl_threshold"),
                    "baseline": found.selection.get("baseline"),
                    "seconds": round(time.perf_counter() - started, 1)}
            atomic_write_text(self.out / f"{key}-candidates.csv",
                              found.candidate_table().to_csv(index=False))
            torch.save({"direction": found.direction, "info": info}, path)
        saved = torch.load(path)
        print(f"{name}: {saved['info']}", flush=True)
        self.record.setdefault("directions", {})[name] = saved["info"]
        return saved["direction"]

    def stage_full(self) -> None:
        from workbench.evaluation import Intervention

        every = self.jbb_circuit(None)
        self.sweep("full", [Intervention.baseline(), Intervention.cna(every, "cna:jbb-pair"),
                            Intervention.random(every, seed=self.args.seed,
                                                name="random:jbb-pair")],
                   [0.0], [self.half("jbb-harmful", None)], self._small_sizes())

    def stage_strongreject(self) -> None:
        from workbench.evaluation import Intervention, load_benchmark

        prompts = load_benchmark("strongreject", n=self.args.strongreject_n, seed=self.args.seed)
        jbb = self.circuit_interventions(filtered=False)
        self.sweep("strongreject", [Intervention.baseline(), *jbb], [0.0], [prompts],
                   self._small_sizes())

    def stage_mmlu(self) -> None:
        from workbench.evaluation import mmlu

        path = self.out / "mmlu.csv"
        done = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["intervention"])
        conditions = [("baseline", None, 1.0)]
        for intervention in self.circuit_interventions():
            conditions += [(intervention, size, 0.0) for size in self._small_sizes()]
        for intervention, size, multiplier in conditions:
            name = intervention if isinstance(intervention, str) else intervention.name
            label = name if size is None else f"{name}@{size}"
            if label in set(done["intervention"]):
                continue
            context = None
            if not isinstance(intervention, str):
                context = intervention.at_size(size).apply(self.model, multiplier)
            result = mmlu(self.model, n=self.args.mmlu_n, shots=0, seed=self.args.seed,
                          intervention=context)
            row = {"intervention": label, "kind": name.split(":")[0], "size": size,
                   "multiplier": multiplier, "n": self.args.mmlu_n,
                   "accuracy": result.accuracy}
            done = pd.concat([done, pd.DataFrame([row])], ignore_index=True)
            atomic_write_text(path, done.to_csv(index=False))
            print(f"MMLU {label} x{multiplier}: {result.accuracy:.3f}", flush=True)

    def stage_kl(self) -> None:
        from workbench.evaluation.drift import HarmlessDrift

        path = self.out / "kl.csv"
        done = pd.read_csv(path) if path.is_file() else pd.DataFrame(
            columns=["intervention", "fraction"])
        drift = HarmlessDrift(self.model, seed=self.args.seed)
        self.record["kl"] = drift.describe()
        for intervention in self.circuit_interventions():
            for fraction in self.sizes:
                if ((done["intervention"] == intervention.name)
                        & (done["fraction"] == fraction)).any():
                    continue
                sized = intervention.at_size(fraction)
                with sized.apply(self.model, 0.0):
                    kl = drift.kl()
                row = {"intervention": intervention.name, "size": sized.size(),
                       "fraction": fraction, "multiplier": 0.0, "kl": kl}
                done = pd.concat([done, pd.DataFrame([row])], ignore_index=True)
                atomic_write_text(path, done.to_csv(index=False))
                print(f"KL {intervention.name} {fraction:g} x0: {kl:.4f}", flush=True)

    def _small_sizes(self) -> list[float]:
        """The sizes of the secondary stages: the paper's 0.1% and 1%, where swept."""
        return [s for s in self.sizes if s in (0.001, 0.01)] or self.sizes[:1]

    # -- records -------------------------------------------------------------------------
    def _read_record(self) -> dict[str, Any]:
        path = self.out / "run.json"
        record = json.loads(path.read_text()) if path.is_file() else {}
        record.update({
            "model": self.model.info(),
            "settings": {"sizes": self.sizes, "seed": self.args.seed,
                         "max_new_tokens": self.args.max_new_tokens,
                         "batch_size": self.args.batch_size, "heldout_n": self.args.heldout_n,
                         "strongreject_n": self.args.strongreject_n,
                         "mmlu_n": self.args.mmlu_n, "decoding": "greedy",
                         "refusal": "keyword classifier", "quality": "1 - repeated 4-grams"},
            "versions": {p: metadata.version(p) for p in ("torch", "transformers", "nnsight")},
            "machine": {"python": platform.python_version(), "processor": platform.machine(),
                        "cores": _cores()},
        })
        record.setdefault("stage_seconds", {})
        return record

    def write_record(self) -> None:
        """Write ``run.json``, keeping what another run of other stages wrote meanwhile."""
        path = self.out / "run.json"
        on_disk = json.loads(path.read_text()) if path.is_file() else {}
        for key in ("stage_seconds", "directions"):
            self.record[key] = {**on_disk.get(key, {}), **self.record.get(key, {})}
        atomic_write_text(path, json.dumps(self.record, indent=2) + "\n")


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def summarise(folder: Path) -> pd.DataFrame:
    """One row per (stage, benchmark, condition) from every stage's parquet file."""
    from workbench.evaluation import summary

    tables = []
    for stage in STAGES:
        path = folder / f"{stage}.parquet"
        if path.is_file():
            table = summary(pd.read_parquet(path))
            table.insert(0, "stage", stage)
            tables.append(table)
    if not tables:
        return pd.DataFrame()
    table = pd.concat(tables, ignore_index=True)
    table["benchmark"] = table["benchmark"].str.replace(r"\[n=.*\]$", "", regex=True)
    return table


# -- the docs' tables ------------------------------------------------------------------------
BEGIN, END = "<!-- replication tables: begin (written by scripts/replicate_paper.py) -->", \
    "<!-- replication tables: end -->"


def _pct(value: Any) -> str:
    return "" if pd.isna(value) else f"{100 * value:.0f}%"


def _size_label(row: pd.Series) -> str:
    if pd.isna(row.get("size")):
        return ""
    return f"{100 * row['fraction']:.3g}% ({int(row['size']):,})"


def render_model(folder: Path) -> str:
    """Markdown tables of one model's results (only what has been measured)."""
    record = json.loads((folder / "run.json").read_text())
    table = pd.read_csv(folder / "summary.csv") if (folder / "summary.csv").is_file() \
        else pd.DataFrame()
    info = record["model"]
    n_neurons = info["n_layers"] * info["d_mlp"]
    lines = [f"### {info['name']}", "",
             f"{info['n_layers']} layers x d_mlp {info['d_mlp']} = {n_neurons:,} MLP neurons; "
             f"greedy, {record['settings']['max_new_tokens']} new tokens, seed "
             f"{record['settings']['seed']}; wall time per stage (s): "
             + ", ".join(f"{k} {v:.0f}" for k, v in record["stage_seconds"].items()), ""]
    if table.empty:
        return "\n".join(lines + ["(no results yet)", ""])

    def refusal(stage: str, benchmark: str, intervention: str, size: Any = None,
                multiplier: float = 0.0) -> pd.Series | None:
        rows = table[(table.stage == stage) & table.benchmark.str.startswith(benchmark)
                     & (table.intervention == intervention) & (table.multiplier == multiplier)]
        if size is not None:
            rows = rows[rows["size"] == size]
        return rows.iloc[0] if len(rows) else None

    kl = pd.read_csv(folder / "kl.csv") if (folder / "kl.csv").is_file() else None

    def kl_of(name: str, size: Any) -> str:
        if kl is None:
            return ""
        rows = kl[(kl.intervention == name) & (kl["size"] == size)]
        return f", KL {rows.kl.iloc[0]:.3f}" if len(rows) else ""

    split = table[table.stage == "split"]
    if len(split):
        base = refusal("split", "jbb-harmful:heldout", "baseline", multiplier=1.0)
        measured = "refusal (quality" + (
            f", KL on {record['kl']['n']} harmless prompts x {record['kl']['tokens']} "
            "positions in nats" if kl is not None and "kl" in record else "") + ")"
        lines += ["Circuits from the JBB discover halves; x0 on the held-out harmful half "
                  f"(n = {int(base.n) if base is not None else '?'}); {measured}.", "",
                  "| circuit size | JBB pair | random, same shape | refusal-filtered pair | "
                  "random, same shape |", "|---|---|---|---|---|"]
        if base is not None:
            lines.append(f"| x1 baseline | {_pct(base.refusal_rate)} ({base.quality:.2f}) "
                         "| | | |")
        for size in sorted(split["size"].dropna().unique()):
            cells = []
            for name in ("cna:jbb-pair", "random:jbb-pair", "cna:refusal-filtered",
                         "random:refusal-filtered"):
                row = refusal("split", "jbb-harmful:heldout", name, size)
                cells.append("" if row is None else
                             f"{_pct(row.refusal_rate)} ({row.quality:.2f}"
                             f"{kl_of(name, size)})")
            any_row = split[split["size"] == size].iloc[0]
            lines.append(f"| {_size_label(any_row)} | " + " | ".join(cells) + " |")
        lines.append("")
    other = table[table.stage != "split"]
    if len(other):
        lines += ["Other stages (refusal rate, quality):", "",
                  "| stage | benchmark | intervention | size | multiplier | n | refusal | "
                  "quality |", "|---|---|---|---|---|---|---|---|"]
        for _, row in other.iterrows():
            lines.append(f"| {row.stage} | {row.benchmark} | {row.intervention} | "
                         f"{_size_label(row)} | x{row.multiplier:g} | {row.n} | "
                         f"{_pct(row.refusal_rate)} | {row.quality:.2f} |")
        lines.append("")
    if (folder / "mmlu.csv").is_file():
        mmlu = pd.read_csv(folder / "mmlu.csv")
        lines += [f"MMLU zero-shot, {int(mmlu.n.iloc[0])} questions (seeded sample):", "",
                  "| condition | multiplier | accuracy |", "|---|---|---|"]
        lines += [f"| {r.intervention} | x{r.multiplier:g} | {100 * r.accuracy:.1f}% |"
                  for r in mmlu.itertuples()]
        lines.append("")
    for name, info in record.get("directions", {}).items():
        limit = info.get("kl_threshold")
        baseline = (info.get("baseline") or {}).get("ablation_score")
        lines.append(f"- {name}: layer {info['layer']}, position {info['position']} "
                     f"({info['criterion']}; from {info['positive']} + {info['negative']} "
                     f"prompts; fallback {info['fallback']}, relaxed "
                     f"{info['relaxed_filters']}"
                     + (f"; KL limit {limit:g}" if limit is not None else "")
                     + (f"; validation refusal score unablated {baseline:.2f}"
                        if baseline is not None else "")
                     + f"; selected in {info['seconds']:.0f} s)")
    if record.get("directions"):
        lines.append("")
    return "\n".join(lines)


def render_docs() -> None:
    """Rewrite the tables between the markers of docs/replication.md from the results."""
    text = DOC.read_text()
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    parts = [render_model(folder) for folder in sorted(RESULTS.iterdir())
             if (folder / "run.json").is_file()]
    DOC.write_text(head + BEGIN + "\n\n" + "\n".join(parts) + "\n" + END + tail)
    print(f"wrote the tables of {len(parts)} model(s) into {DOC.relative_to(REPO)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"comma-separated, in order (default all: {','.join(STAGES)})")
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)),
                        type=lambda s: [float(x) for x in s.split(",")],
                        help="circuit sizes as fractions of all MLP neurons")
    parser.add_argument("--contrasts", default=",".join(CONTRASTS),
                        type=lambda s: [c for c in s.split(",") if c],
                        help=f"the circuits' contrasts (default both: {','.join(CONTRASTS)})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--heldout-n", type=int, default=None,
                        help="a seeded sample of each held-out half (default: all 50)")
    parser.add_argument("--strongreject-n", type=int, default=60)
    parser.add_argument("--mmlu-n", type=int, default=200)
    parser.add_argument("--direction-kl", type=lambda s: [float(x) for x in s.split(",")],
                        default=[],
                        help="comma-separated KL limits: each adds a refusal-filtered "
                             "direction selected under that limit instead of 0.1")
    parser.add_argument("--direction-positions", type=int, default=None,
                        help="post-instruction positions tried by the refusal-filtered "
                             "direction's selection (default: all; the JBB pair's tries 1)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--render-docs", action="store_true",
                        help="only rewrite the tables of docs/replication.md")
    args = parser.parse_args(argv)
    if args.render_docs:
        render_docs()
        return 0
    stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stages {unknown}; choose from {','.join(STAGES)}")
    if not args.contrasts or set(args.contrasts) - set(CONTRASTS):
        parser.error(f"--contrasts takes some of {','.join(CONTRASTS)}")
    run = Run(args)
    for stage in stages:
        print(f"== {args.model}: {stage}", flush=True)
        started = time.perf_counter()
        getattr(run, f"stage_{stage}")()
        seconds = time.perf_counter() - started
        run.record["stage_seconds"][stage] = run.record["stage_seconds"].get(stage, 0) + seconds
        atomic_write_text(run.out / "summary.csv", summarise(run.out).to_csv(index=False))
        run.write_record()
        print(f"== {stage} done in {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
