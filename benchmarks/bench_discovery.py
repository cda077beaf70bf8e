"""Discovery: ``cna discover`` against a reference-style loop, each in a new process.

The workload is the paper's: JBB harmful (100) against JBB benign (100), the top 0.1% of
all MLP neurons, universal neurons (bundled ``diverse`` set, 150 prompts) excluded. Both
sides start a Python process, load the model from the same cached float32 folder, and
write the circuit; the wall time of the whole process is measured.

- **reference**: the reference code's loop, written plainly: transformers and a forward
  pre-hook on every down-projection, one prompt at a time (no batching), float64 sums in
  Python, the universal filter applied. It reads the prompts from text files written
  beforehand, so it pays for no workbench import.
- **workbench, cold**: ``cna discover`` with an empty universal-statistics cache (a first
  run on a machine).
- **workbench, warm**: the same command again with that cache filled (every later run).

Each repeat runs the three in turn (interleaved, so drift hits all alike); medians are
reported with each run's time, and the circuits are compared (they must hold the same
neurons: the reference is also the check that the benchmark measures the same work).

Usage: ``python benchmarks/bench_discovery.py [--model smollm2-135m-instruct] [--repeats 3]
[--out figures.json]``. This is a benchmark, not a test: it prints figures and never fails
on a slow machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The reference loop, run as ``python -c REFERENCE <folder> <positive> <negative>
#: <universal> <fraction> <out>``: plain transformers, batch 1, forward pre-hooks.
REFERENCE = r'''
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

folder, positive, negative, universal, fraction, out = sys.argv[1:]
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
layers = model.model.layers
n_layers, d_mlp = len(layers), layers[0].mlp.down_proj.in_features
captured = [None] * n_layers

def capture(index):
    def hook(module, args):
        captured[index] = args[0][0, -1].double()   # [d_mlp] at the last prompt token
    return hook

handles = [layer.mlp.down_proj.register_forward_pre_hook(capture(i))
           for i, layer in enumerate(layers)]

def activations(path):
    for prompt in open(path, encoding="utf-8").read().splitlines():
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                            add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)["input_ids"]
        with torch.no_grad():
            model(input_ids=ids, logits_to_keep=1)
        yield torch.stack(captured)                  # [n_layers, d_mlp]

def mean(path):
    total, n = torch.zeros(n_layers, d_mlp, dtype=torch.float64), 0
    for acts in activations(path):
        total += acts
        n += 1
    return total / n

delta = mean(positive) - mean(negative)
k_top = max(1, round(0.001 * n_layers * d_mlp))      # the universal filter's top 0.1%
hits, n = torch.zeros(n_layers * d_mlp), 0
for acts in activations(universal):
    hits[acts.abs().flatten().topk(k_top).indices] += 1
    n += 1
universal_mask = (hits / n >= 0.8).view(n_layers, d_mlp)
for handle in handles:
    handle.remove()
k = max(1, round(float(fraction) * n_layers * d_mlp))
score = delta.abs().masked_fill(universal_mask, -1.0).flatten()
top = score.topk(k).indices
json.dump({"neurons": [{"layer": int(i) // d_mlp, "index": int(i) % d_mlp} for i in top]},
          open(out, "w"))  # the neurons as a circuit file lists them
'''


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)
    return time.perf_counter() - started


def neurons(path: Path) -> set[tuple[int, int]]:
    return {(int(n["layer"]), int(n["index"])) for n in json.loads(path.read_text())["neurons"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fraction", type=float, default=0.001)
    parser.add_argument("--out", type=Path, help="write the figures as JSON here too")
    args = parser.parse_args()

    import torch

    import workbench
    from workbench.embedded import cached_weights_dir
    from workbench.evaluation import load_benchmark
    from workbench.prompts import PromptSet

    workbench.load_model(args.model)  # builds the float32 cache both sides load from
    folder = cached_weights_dir(args.model)
    work = Path(tempfile.mkdtemp(prefix="bench-discovery-"))
    files = {}
    for name, prompts in (("positive", load_benchmark("jbb-harmful")),
                          ("negative", load_benchmark("jbb-benign")),
                          ("universal", PromptSet.bundled("diverse"))):
        files[name] = work / f"{name}.txt"
        files[name].write_text("\n".join(prompts.prompts), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    reference = [sys.executable, "-c", REFERENCE, str(folder), str(files["positive"]),
                 str(files["negative"]), str(files["universal"]), str(args.fraction),
                 str(work / "reference.json")]
    discover = [sys.executable, "-m", "workbench.cli", "discover", "--model", args.model,
                "--positive", str(files["positive"]), "--negative", str(files["negative"]),
                "--fraction", str(args.fraction), "--out"]
    warm_cache = work / "warm-cache"
    subprocess.run([*discover, str(work / "warmup.json")], check=True, capture_output=True,
                   env={**env, "CNA_STATS_CACHE": str(warm_cache)})

    times: dict[str, list[float]] = {"reference": [], "cold": [], "warm": []}
    for repeat in range(args.repeats):
        times["reference"].append(timed(reference, env))
        cold_cache = Path(tempfile.mkdtemp(prefix="cold-cache-", dir=work))
        times["cold"].append(timed([*discover, str(work / "cold.json")],
                                   {**env, "CNA_STATS_CACHE": str(cold_cache)}))
        times["warm"].append(timed([*discover, str(work / "warm.json")],
                                   {**env, "CNA_STATS_CACHE": str(warm_cache)}))
        print(f"run {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()),
              flush=True)

    found = {name: neurons(work / f"{name}.json") for name in ("reference", "cold", "warm")}
    same = len(found["reference"] & found["cold"])
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"\n{args.model}, JBB 100 + 100, fraction {args.fraction}, {len(found['cold'])} "
          f"neurons; torch threads {torch.get_num_threads()}; medians of {args.repeats}:")
    print("| side | seconds (median) | runs | ratio to the reference |\n|---|---|---|---|")
    for name in ("reference", "cold", "warm"):
        runs = ", ".join(f"{t:.1f}" for t in times[name])
        print(f"| {name} | {medians[name]:.1f} | {runs} | "
              f"{medians['reference'] / medians[name]:.2f}x |")
    print(f"same neurons, reference vs workbench: {same} of {len(found['reference'])}; "
          f"cold vs warm identical: {found['cold'] == found['warm']}")
    if args.out:
        args.out.write_text(json.dumps({
            "model": args.model, "fraction": args.fraction, "repeats": args.repeats,
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "seconds": times, "medians": medians,
            "ratio_cold": medians["reference"] / medians["cold"],
            "ratio_warm": medians["reference"] / medians["warm"],
            "same_neurons": same, "n_neurons": len(found["reference"])}, indent=2) + "\n")


if __name__ == "__main__":
    main()
