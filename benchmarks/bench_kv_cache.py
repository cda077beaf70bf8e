"""The in-place KV cache of continuous batching against transformers' concatenating one.

``workbench.generate`` keeps the rows' keys and values in buffers with spare columns
(:class:`workbench.decoding.GrowingLayer`); this runs the same greedy calls with the batch's
cache left as transformers' ``DynamicLayer`` (which concatenates the whole cache at every
step), the two interleaved in each repeat, and checks that the completions agree.

Usage: ``python benchmarks/bench_kv_cache.py [--model smollm2-135m-safety-late]
[--prompts 100] [--max-new-tokens 64] [--multipliers 0,1] [--repeats 3]``. A benchmark,
not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Iterator
from unittest import mock

import torch

import workbench
from workbench.decoding import GrowingLayer
from workbench.evaluation import load_benchmark


@contextlib.contextmanager
def cache_kind(kind: str) -> Iterator[None]:
    """``"in place"``: the workbench as it is; ``"concatenating"``: batches keep
    transformers' own cache layers."""
    if kind == "in place":
        yield
        return
    with mock.patch.object(GrowingLayer, "adopt", classmethod(lambda _cls, layer: layer)):
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-safety-late")
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--multipliers", default="0,1")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model = workbench.load_model(args.model)
    prompts = load_benchmark("jbb-harmful").prompts[:args.prompts]
    circuit = workbench.discover(model, "qualitative-harmful", "qualitative-benign",
                                 progress=False)
    multipliers = [float(text) for text in args.multipliers.split(",")]
    print(f"{model.name}, {torch.get_num_threads()} threads; {len(prompts)} JBB prompts x "
          f"{args.max_new_tokens} new tokens, batch size {args.batch_size}; "
          f"{len(circuit)}-neuron circuit")
    workbench.generate(model, prompts[:2], max_new_tokens=2)  # packs the weights
    times: dict[tuple[str, float], list[float]] = {}
    same: dict[float, int] = {}
    for repeat in range(args.repeats):
        for multiplier in multipliers:
            completions = {}
            for kind in ("in place", "concatenating"):
                with cache_kind(kind):
                    start = time.perf_counter()
                    completions[kind] = workbench.generate(
                        model, prompts, circuit=circuit, multiplier=multiplier,
                        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
                    times.setdefault((kind, multiplier), []).append(
                        time.perf_counter() - start)
            same[multiplier] = sum(a == b for a, b in zip(*completions.values()))
            print(f"  run {repeat + 1}, x{multiplier:g}: in place "
                  f"{times['in place', multiplier][-1]:.1f} s, concatenating "
                  f"{times['concatenating', multiplier][-1]:.1f} s", flush=True)
    print(f"\nmedians of {args.repeats}:")
    for multiplier in multipliers:
        fast, slow = (statistics.median(times[kind, multiplier])
                      for kind in ("in place", "concatenating"))
        print(f"  x{multiplier:g}: in place {fast:.1f} s, concatenating {slow:.1f} s "
              f"({slow / fast:.3f}x); {same[multiplier]}/{len(prompts)} completions identical")


if __name__ == "__main__":
    main()
