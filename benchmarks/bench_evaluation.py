"""Evaluation throughput and MMLU on the default embedded model.

Reports:
  1. refusal evaluation of 100 JBB harmful prompts x 64 new tokens (greedy, batched,
     each row stopped at EOS): wall time per batch size, refusal rate and mean quality;
  2. MMLU zero-shot accuracy on the fixed 500-question sample (seed 0) and its time
     (``--shots 5`` for few-shot; several times slower on a CPU).

Usage: ``python benchmarks/bench_evaluation.py [--batch-sizes 16,32] [--mmlu-n 500]``.
A benchmark, not a test: it prints figures and never fails on a slow machine.
"""

from __future__ import annotations

import argparse
import time

import workbench
from workbench.evaluation import load_benchmark, mean_quality, mmlu, refusal_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=workbench.DEFAULT_MODEL)
    parser.add_argument("--batch-sizes", default="16,32")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--mmlu-n", type=int, default=500)
    parser.add_argument("--shots", type=int, default=0)
    parser.add_argument("--skip-mmlu", action="store_true")
    args = parser.parse_args()

    model = workbench.load_model(args.model)
    prompts = load_benchmark("jbb-harmful")
    workbench.generate(model, prompts.prompts[:2], max_new_tokens=4)  # warm-up
    print(f"model: {model}")
    print(f"\nrefusal evaluation, {len(prompts)} JBB harmful prompts x {args.new_tokens} "
          "new tokens:")
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        started = time.perf_counter()
        completions = workbench.generate(model, prompts, max_new_tokens=args.new_tokens,
                                         batch_size=batch_size)
        seconds = time.perf_counter() - started
        print(f"  batch {batch_size:>3}: {seconds:6.1f} s   refusal {refusal_rate(completions):.2f}"
              f"   quality {mean_quality(completions):.3f}")

    if not args.skip_mmlu:
        result = mmlu(model, n=args.mmlu_n, shots=args.shots, progress=False)
        print(f"\nMMLU {args.shots}-shot, {result.n} questions (seed 0): accuracy "
              f"{result.accuracy:.3f} in {result.seconds:.1f} s")


if __name__ == "__main__":
    main()
