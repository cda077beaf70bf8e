"""Assisted generation on the real 1.5B model with the 0.5B of its family as the draft.

transformers' assisted generation (``generate(..., assistant_model=draft)``) lets a small
model propose a few tokens that the large one checks in one forward pass; greedy outputs
stay the large model's by construction. It decodes one prompt at a time. This script
measures, in one run, on the same prompts (the first ``--prompts`` JBB harmful prompts,
``--max-new-tokens`` greedy tokens each):

- ``generate`` on the 1.5B, one prompt at a time (what a widget call does);
- assisted ``generate``, one prompt at a time, the 0.5B proposing;
- ``generate`` on the 1.5B, all prompts in one left-padded batch;
- ``workbench.generate`` on the 1.5B, all prompts at once (continuous batching and packed
  linears: what a sweep does).

After one short warm-up call of each, each repeat runs the four in turn; medians are
reported, with how many completions are identical to the one-at-a-time ``generate``.

Usage: ``python benchmarks/bench_assisted.py [--prompts 4] [--max-new-tokens 32]``.
This is a benchmark, not a test: it prints figures and never fails on a slow machine.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from bench_generation import plain_generate, real_tokens, timed

import workbench
from workbench.evaluation import load_benchmark

TARGET, DRAFT = "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct"


def one_at_a_time(model, prompts: list[str], max_new_tokens: int,
                  draft=None) -> tuple[list[str], int]:
    """``generate`` on each prompt alone, assisted by ``draft`` when given."""
    texts, count = [], 0
    extra = {} if draft is None else {"assistant_model": draft.hf_model}
    with torch.no_grad():
        for prompt in prompts:
            inputs = model.encode([prompt], model.prompting())
            inputs.pop("position_ids", None)
            output = model.hf_model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                top_p=None, top_k=None, pad_token_id=model.tokenizer.pad_token_id, **extra)
            tokens = real_tokens(model, output[:, inputs["input_ids"].shape[1]:])[0]
            texts.append(model.tokenizer.decode(tokens, skip_special_tokens=True))
            count += len(tokens)
    return texts, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default=TARGET)
    parser.add_argument("--draft", default=DRAFT)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    target = workbench.load_model(args.target)
    draft = workbench.load_model(args.draft)
    prompts = load_benchmark("jbb-harmful").prompts[:args.prompts]
    print(f"{target.name} (draft {draft.name}), {torch.get_num_threads()} threads; "
          f"{len(prompts)} JBB prompts x {args.max_new_tokens} new tokens, greedy")
    n, k = len(prompts), args.max_new_tokens
    sides = {
        "generate, one prompt at a time": lambda: one_at_a_time(target, prompts, k),
        "assisted generate, one at a time": lambda: one_at_a_time(target, prompts, k, draft),
        f"generate, batch of {n}": lambda: plain_generate(target, prompts, k, n),
        f"workbench.generate, batch of {n}": lambda: (
            workbench.generate(target, prompts, max_new_tokens=k, batch_size=n), None),
    }
    # One-time costs (packing the weights, first-call allocations) stay out of the figures.
    one_at_a_time(target, prompts[:1], 2)
    one_at_a_time(target, prompts[:1], 2, draft)
    workbench.generate(target, prompts[:1], max_new_tokens=2)
    times: dict[str, list[float]] = {name: [] for name in sides}
    reference: list[str] = []
    identical: dict[str, int] = {}
    count = 0
    for repeat in range(args.repeats):
        for name, run in sides.items():
            seconds, (texts, tokens) = timed(run)
            times[name].append(seconds)
            if not reference:  # the first way, one-at-a-time generate, counts the tokens
                reference, count = texts, tokens
            identical[name] = sum(a == b for a, b in zip(reference, texts))
            print(f"  run {repeat + 1}: {name} {seconds:.1f} s", flush=True)
    base = statistics.median(times["generate, one prompt at a time"])
    print(f"\n{count} new tokens in all (those of one-at-a-time generate); medians of "
          f"{args.repeats}:")
    print("| way | seconds | tok/s | against one-at-a-time generate | identical |")
    print("|---|---|---|---|---|")
    for name, measured in times.items():
        seconds = statistics.median(measured)
        print(f"| {name} | {seconds:.1f} | {count / seconds:.2f} | {base / seconds:.2f}x | "
              f"{identical[name]}/{n} |")


if __name__ == "__main__":
    main()
