"""Overhead of the workbench over plain transformers, on the default embedded model.

Reports (median of ``--repeats`` interleaved runs, wall-clock seconds):
  1. activation collection (``workbench.activations.collect``, nnsight tracing, float64
     statistics) vs a bare forward pass over the same batches;
  2. greedy generation with a circuit steered (multiplier 0) vs unsteered.

Usage: ``python benchmarks/bench_overhead.py [--prompts 64] [--batch-size 16]``.
This is a benchmark, not a test: it prints figures and never fails on a slow machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import workbench
from workbench.activations import collect, length_order
from workbench.prompts import PromptSet


def paired_medians(baseline, candidate, repeats: int) -> tuple[float, float]:
    """Median wall time of each, runs interleaved so that machine drift hits both alike."""
    times: dict[str, list[float]] = {"baseline": [], "candidate": []}
    for _ in range(repeats):
        for label, fn in (("baseline", baseline), ("candidate", candidate)):
            started = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - started)
    return statistics.median(times["baseline"]), statistics.median(times["candidate"])


def bare_forward(model, prompts: list[str], batch_size: int) -> None:
    """The same batches and forward as collect(), without tracing or statistics."""
    prompting = model.prompting()
    order = length_order(model, prompts, prompting)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            batch = [prompts[i] for i in order[start:start + batch_size]]
            model.hf_model(**model.encode(batch, prompting), **model.last_position_only())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=workbench.DEFAULT_MODEL)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--gen-prompts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    started = time.perf_counter()
    model = workbench.load_model(args.model)
    print(f"model: {model} (loaded in {time.perf_counter() - started:.2f} s), "
          f"torch threads: {torch.get_num_threads()}")
    prompts = (PromptSet.bundled("jbb-harmful").prompts
               + PromptSet.bundled("jbb-benign").prompts)[:args.prompts]

    collect(model, prompts[:args.batch_size], progress=False)  # warm-up (builds the tracer)
    bare, traced = paired_medians(
        lambda: bare_forward(model, prompts, args.batch_size),
        lambda: collect(model, prompts, batch_size=args.batch_size, progress=False),
        args.repeats)
    print(f"\ncollection, {len(prompts)} prompts, batch {args.batch_size}:")
    print(f"  bare forward        {bare:7.2f} s   ({len(prompts) / bare:6.1f} prompts/s)")
    print(f"  workbench collect   {traced:7.2f} s   ({len(prompts) / traced:6.1f} prompts/s)")
    print(f"  ratio               {traced / bare:7.3f}x")

    circuit = workbench.discover(model, "qualitative-harmful", "qualitative-benign",
                                 progress=False)
    gen_prompts = prompts[:args.gen_prompts]
    common = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                  batch_size=args.gen_prompts)
    workbench.generate(model, gen_prompts[:2], max_new_tokens=4)  # warm-up
    plain, steered = paired_medians(
        lambda: workbench.generate(model, gen_prompts, **common),
        lambda: workbench.generate(model, gen_prompts, circuit=circuit, multiplier=0.0,
                                   **common),
        args.repeats)
    tokens = args.gen_prompts * args.new_tokens
    print(f"\ngeneration, {args.gen_prompts} prompts x {args.new_tokens} new tokens "
          f"(circuit of {len(circuit)} neurons in {len(circuit.layer_counts())} layers):")
    print(f"  unsteered           {plain:7.2f} s   ({tokens / plain:6.1f} tokens/s)")
    print(f"  steered (m=0)       {steered:7.2f} s   ({tokens / steered:6.1f} tokens/s)")
    print(f"  ratio               {steered / plain:7.3f}x")


if __name__ == "__main__":
    main()
