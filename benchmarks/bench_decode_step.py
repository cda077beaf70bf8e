"""The cost of one greedy decode step by the number of rows, on packed linears.

Each size prefills ``rows`` random prompts of 60 tokens, then times decode steps of one
token per row against that cache (medians of ``--steps``). On a small model on CPU a step
of a few rows costs almost as much as one of 32 (every step reads all the weights), which
is why a batch's last few rows, running alone, are dear.

Usage: ``python benchmarks/bench_decode_step.py [--model smollm2-135m-safety-late]
[--rows 1,4,8,16,32,64] [--steps 20]``. A benchmark, not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import DynamicCache

import workbench
from workbench.packing import packed_linears
from workbench.prefix import cache_argument

PROMPT_TOKENS = 60


def step_seconds(model: workbench.WorkbenchModel, rows: int, steps: int) -> float:
    """Median seconds of a decode step of ``rows`` rows after a prefill of 60 tokens each."""
    generator = torch.Generator().manual_seed(rows)
    ids = torch.randint(100, 1000, (rows, PROMPT_TOKENS), generator=generator)  # [rows, pos]
    cache = DynamicCache(config=model.config)
    keyword = {cache_argument(model): cache, **model.last_position_only()}
    model.hf_model(input_ids=ids, use_cache=True, **keyword)
    token = ids[:, -1:]  # [rows, 1]
    times = []
    for step in range(steps + 2):  # the first two warm up (a layer's first call runs plainly)
        start = time.perf_counter()
        model.hf_model(input_ids=token, use_cache=True, **keyword)
        if step >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-safety-late")
    parser.add_argument("--rows", default="1,4,8,16,32,64")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    model = workbench.load_model(args.model)
    print(f"{model.name}, {torch.get_num_threads()} threads; decode steps after a "
          f"{PROMPT_TOKENS}-token prefill, medians of {args.steps}, packed linears")
    print(f"{'rows':>5}  {'ms/step':>8}  {'tok/s':>6}")
    with torch.no_grad(), packed_linears(model):
        for rows in (int(text) for text in args.rows.split(",")):
            seconds = step_seconds(model, rows, args.steps)
            print(f"{rows:>5}  {seconds * 1000:>8.1f}  {rows / seconds:>6.0f}", flush=True)


if __name__ == "__main__":
    main()
