"""The cost of one greedy decode step by the number of rows, on packed linears.

Each size prefills ``rows`` random prompts of 60 tokens, then times decode steps of one
token per row against that cache (medians of ``--steps``). On a small model on CPU a step
of a few rows costs almost as much as one of 32 (every step reads all the weights), which
is why a batch's last few rows, running alone, are dear.

With ``--compiled`` it also times ``torch.compile`` (inductor, dynamic shapes) of the
model's forward on plain linear layers: the compile itself, and its 32-row step against the
eager one, both without packing (a compiled decode step is a candidate for a faster sweep).

Usage: ``python benchmarks/bench_decode_step.py [--model smollm2-135m-safety-late]
[--rows 1,4,8,16,32,64] [--steps 20] [--compiled]``. A benchmark, not a test: it prints
figures.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from transformers import DynamicCache

import workbench
from workbench.packing import packed_linears
from workbench.prefix import cache_argument

PROMPT_TOKENS = 60


def step_seconds(model: workbench.WorkbenchModel, rows: int, steps: int,
                 forward: Callable[..., object] | None = None) -> float:
    """Median seconds of a decode step of ``rows`` rows after a prefill of 60 tokens each
    (the step through ``forward``, default the model's own)."""
    forward = forward or model.hf_model
    generator = torch.Generator().manual_seed(rows)
    ids = torch.randint(100, 1000, (rows, PROMPT_TOKENS), generator=generator)  # [rows, pos]
    cache = DynamicCache(config=model.config)
    keyword = {cache_argument(model): cache, **model.last_position_only()}
    model.hf_model(input_ids=ids, use_cache=True, **keyword)
    token = ids[:, -1:]  # [rows, 1]
    times = []
    for step in range(steps + 2):  # the first two warm up (a layer's first call runs plainly)
        start = time.perf_counter()
        forward(input_ids=token, use_cache=True, **keyword)
        if step >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-safety-late")
    parser.add_argument("--rows", default="1,4,8,16,32,64")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--compiled", action="store_true",
                        help="also time torch.compile of the forward (unpacked, 32 rows)")
    args = parser.parse_args()
    model = workbench.load_model(args.model)
    print(f"{model.name}, {torch.get_num_threads()} threads; decode steps after a "
          f"{PROMPT_TOKENS}-token prefill, medians of {args.steps}, packed linears")
    print(f"{'rows':>5}  {'ms/step':>8}  {'tok/s':>6}")
    with torch.no_grad(), packed_linears(model):
        for rows in (int(text) for text in args.rows.split(",")):
            seconds = step_seconds(model, rows, args.steps)
            print(f"{rows:>5}  {seconds * 1000:>8.1f}  {rows / seconds:>6.0f}", flush=True)
    if args.compiled:
        with torch.no_grad():
            eager = step_seconds(model, 32, args.steps)
            compiled = torch.compile(model.hf_model.forward, dynamic=True)
            start = time.perf_counter()
            step_seconds(model, 32, 1, compiled)  # compiles (prefill eager, three steps)
            compile_seconds = time.perf_counter() - start
            fast = step_seconds(model, 32, args.steps, compiled)
        print(f"unpacked, 32 rows: eager {eager * 1000:.1f} ms/step; torch.compile "
              f"{compile_seconds:.0f} s to compile, then {fast * 1000:.1f} ms/step")


if __name__ == "__main__":
    main()
