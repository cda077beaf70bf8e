"""Generation throughput: the workbench against plain transformers ``generate``, interleaved.

Two workloads, on the same model, prompts, batch size and machine, in one run:

1. **Sweep**: the JBB harmful prompts (100) x 64 new tokens with the refusal circuit at
   x1 (unchanged, mostly short refusals) and x0 (ablated, longer answers). The baseline is
   ``hf_model.generate`` on left-padded batches of ``--batch-size`` prompts sorted by
   length, under the same steering hooks (``workbench.steer``); the workbench side is
   ``workbench.generate(..., circuit=..., multiplier=...)``, which decodes with continuous
   batching (:mod:`workbench.decoding`).
2. **Widget call**: one prompt x 48 tokens, streamed as the live slider streams it
   (``workbench.streaming.stream_generate``) against ``generate`` with a streamer: time to
   the first token and the whole call.

With ``--breakdown``, each condition also runs the two halves of the workbench's gain
apart: ``generate`` with packed linears (:func:`workbench.packing.packed_linears`) and the
workbench with packing switched off (``CNA_PACKED_LINEARS=0``, continuous batching alone).

Each repeat runs baseline then workbench for every condition, so drift hits both alike;
medians are reported. Throughput counts the tokens each completion really has (up to and
including its end-of-sequence token), the same for both sides when their completions are
identical (the count of identical completions is printed). The compute ceiling is the
token rate of bare forward passes over the same prompts (batched prefill, no cache):
what the cores do when the weights are reused across many tokens, measured with the plain
layers and with packed ones.

Usage: ``python benchmarks/bench_generation.py [--repeats 3] [--prompts 100] [--breakdown]``.
This is a benchmark, not a test: it prints figures and never fails on a slow machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from unittest import mock

import torch

import workbench
from workbench.decoding import eos_ids
from workbench.evaluation import load_benchmark
from workbench.packing import ENV_SWITCH, packed_linears
from workbench.streaming import TextStreamer, stream_generate


def real_tokens(model, new_tokens: torch.Tensor) -> list[list[int]]:
    """Each row's new tokens up to and including its first end-of-sequence token."""
    stop = eos_ids(model)
    rows = []
    for row in new_tokens.tolist():
        cut = next((i + 1 for i, token in enumerate(row) if token in stop), len(row))
        rows.append(row[:cut])
    return rows


def plain_generate(model, prompts: list[str], max_new_tokens: int,
                   batch_size: int) -> tuple[list[str], int]:
    """transformers' generate on length-sorted, left-padded batches (the baseline).

    Returns the completions and how many real new tokens they have.
    """
    prompting = model.prompting()
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    texts, count = [""] * len(prompts), 0
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            inputs = model.encode([prompts[i] for i in rows], prompting)
            inputs.pop("position_ids", None)
            output = model.hf_model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                top_p=None, top_k=None, pad_token_id=model.tokenizer.pad_token_id)
            new = real_tokens(model, output[:, inputs["input_ids"].shape[1]:])
            for row, tokens in zip(rows, new):
                texts[row] = model.tokenizer.decode(tokens, skip_special_tokens=True)
                count += len(tokens)
    return texts, count


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def ceiling(model, prompts: list[str], batch_size: int) -> float:
    """Tokens per second of bare batched forward passes over the prompts."""
    prompting = model.prompting()
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    tokens, started = 0, time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            inputs = model.encode([prompts[i] for i in order[start:start + batch_size]],
                                  prompting)
            model.hf_model(**inputs, **model.last_position_only())
            tokens += int(inputs["attention_mask"].sum())
    return tokens / (time.perf_counter() - started)


def widget_call(model, circuit, prompt: str, max_new_tokens: int,
                workbench_first: bool = False) -> dict[str, float]:
    """First-token latency and total time of one streamed completion, both ways.

    ``workbench_first`` runs the workbench's side first (alternate it between calls).
    """

    def plain() -> tuple[float, float]:
        first: list[float] = []
        started = time.perf_counter()  # from the prompt's text, as the workbench's side
        inputs = model.encode([prompt], model.prompting())
        inputs.pop("position_ids", None)
        # the streamer stream_generate uses: both sides hear the same text at the same token
        streamer = TextStreamer(model.tokenizer, lambda text: first.append(time.perf_counter()))
        with workbench.steer(model, circuit, multiplier=0.0), torch.no_grad():
            model.hf_model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                    temperature=None, top_p=None, top_k=None,
                                    streamer=streamer,
                                    pad_token_id=model.tokenizer.pad_token_id)
        return (first[0] if first else time.perf_counter()) - started, \
            time.perf_counter() - started

    def ours() -> tuple[float, float]:
        first: list[float] = []
        started = time.perf_counter()
        stream_generate(model, prompt, circuit=circuit, multiplier=0.0,
                        max_new_tokens=max_new_tokens,
                        on_text=lambda text: first.append(time.perf_counter()))
        return (first[0] if first else time.perf_counter()) - started, \
            time.perf_counter() - started

    sides = [("workbench", ours), ("plain", plain)]
    figures = {}
    for side, run in sides if workbench_first else sides[::-1]:
        figures[f"{side}_first"], figures[f"{side}_total"] = run()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-safety-late")
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--widget-calls", type=int, default=3,
                        help="widget-sized calls per repeat, each both ways")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time generate with packed linears, and the workbench "
                             "without them")
    args = parser.parse_args()

    model = workbench.load_model(args.model)
    prompts = load_benchmark("jbb-harmful").prompts[:args.prompts]
    circuit = workbench.discover(model, "qualitative-harmful", "qualitative-benign",
                                 progress=False)
    print(f"{model.name}, {torch.get_num_threads()} threads; {len(prompts)} JBB prompts x "
          f"{args.max_new_tokens} new tokens, batch size {args.batch_size}; "
          f"{len(circuit)}-neuron circuit")
    times: dict[tuple[str, float], list[float]] = {}
    tokens: dict[float, int] = {}
    identical: dict[float, int] = {}
    ratios: dict[float, list[float]] = {}
    ceilings, packed_ceilings, widget = [], [], []
    for repeat in range(args.repeats):
        ceilings.append(ceiling(model, prompts, args.batch_size))
        with packed_linears(model):
            packed_ceilings.append(ceiling(model, prompts, args.batch_size))
        for multiplier in (1.0, 0.0):
            with workbench.steer(model, circuit, multiplier=multiplier):
                plain_s, (plain, count) = timed(lambda: plain_generate(
                    model, prompts, args.max_new_tokens, args.batch_size))
            bench_s, ours = timed(lambda m=multiplier: workbench.generate(
                model, prompts, circuit=circuit, multiplier=m,
                max_new_tokens=args.max_new_tokens, batch_size=args.batch_size))
            times.setdefault(("plain", multiplier), []).append(plain_s)
            times.setdefault(("workbench", multiplier), []).append(bench_s)
            ratios.setdefault(multiplier, []).append(plain_s / bench_s)
            tokens[multiplier] = count
            identical[multiplier] = sum(a == b for a, b in zip(plain, ours))
            line = (f"  run {repeat + 1}, x{multiplier:g}: generate {plain_s:.1f} s, "
                    f"workbench {bench_s:.1f} s ({plain_s / bench_s:.2f}x)")
            if args.breakdown:
                with workbench.steer(model, circuit, multiplier=multiplier), \
                        packed_linears(model):
                    packed_s, _ = timed(lambda: plain_generate(
                        model, prompts, args.max_new_tokens, args.batch_size))
                with mock.patch.dict(os.environ, {ENV_SWITCH: "0"}):  # packing off
                    unpacked_s, _ = timed(lambda m=multiplier: workbench.generate(
                        model, prompts, circuit=circuit, multiplier=m,
                        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size))
                times.setdefault(("packed generate", multiplier), []).append(packed_s)
                times.setdefault(("unpacked workbench", multiplier), []).append(unpacked_s)
                line += (f"; generate + packed {packed_s:.1f} s, "
                         f"workbench unpacked {unpacked_s:.1f} s")
            print(line, flush=True)
        widget += [widget_call(model, circuit, "How do I pick a lock?", 48,
                               workbench_first=bool((len(widget) + call) % 2))
                   for call in range(args.widget_calls)]

    plain_top = statistics.median(ceilings)
    packed_top = statistics.median(packed_ceilings)
    top = max(plain_top, packed_top)
    print(f"\ncompute ceiling (bare batched forward over the prompts): {plain_top:.0f} tok/s "
          f"with plain linears, {packed_top:.0f} tok/s with packed ones (the higher is the "
          f"column's)\n")
    print(f"{'workload':<12} {'tokens':>7} {'generate tok/s':>15} {'workbench tok/s':>16} "
          f"{'ratio':>6} {'ratios':>18} {'ceiling':>8} {'identical':>10}")
    for multiplier in (1.0, 0.0):
        plain_rate = tokens[multiplier] / statistics.median(times[("plain", multiplier)])
        ours_rate = tokens[multiplier] / statistics.median(times[("workbench", multiplier)])
        spread = ", ".join(f"{r:.2f}" for r in ratios[multiplier])
        print(f"{'CNA x' + format(multiplier, 'g'):<12} {tokens[multiplier]:>7} "
              f"{plain_rate:>15.0f} {ours_rate:>16.0f} "
              f"{statistics.median(ratios[multiplier]):>5.2f}x {spread:>18} "
              f"{ours_rate / top:>7.0%} {identical[multiplier]:>6}/{len(prompts)}")
    total_plain = sum(statistics.median(times[("plain", m)]) for m in (1.0, 0.0))
    total_ours = sum(statistics.median(times[("workbench", m)]) for m in (1.0, 0.0))
    pooled = [sum(times[("plain", m)][i] for m in (1.0, 0.0))
              / sum(times[("workbench", m)][i] for m in (1.0, 0.0))
              for i in range(args.repeats)]
    print(f"{'sweep':<12} {sum(tokens.values()):>7} "
          f"{sum(tokens.values()) / total_plain:>15.0f} "
          f"{sum(tokens.values()) / total_ours:>16.0f} {statistics.median(pooled):>5.2f}x "
          f"{', '.join(f'{r:.2f}' for r in pooled):>18}")
    if args.breakdown:
        print("\nbreakdown (median tok/s; ratio to generate):")
        for side in ("packed generate", "unpacked workbench"):
            for multiplier in (1.0, 0.0):
                side_s = statistics.median(times[(side, multiplier)])
                plain_s = statistics.median(times[("plain", multiplier)])
                print(f"  {side:<19} x{multiplier:g}: {tokens[multiplier] / side_s:5.0f} tok/s "
                      f"({plain_s / side_s:.2f}x)")
    print(f"\nwidget call (1 prompt x 48 tokens, streamed, circuit x0), medians of "
          f"{len(widget)}:")
    for side in ("plain", "workbench"):
        first = statistics.median(w[f"{side}_first"] for w in widget)
        total = statistics.median(w[f"{side}_total"] for w in widget)
        label = "generate" if side == "plain" else "workbench"
        print(f"  {label:<10} first token {first * 1000:6.0f} ms, whole call {total:5.2f} s")


if __name__ == "__main__":
    main()
