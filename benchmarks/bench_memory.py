"""Peak resident memory of a sweep-sized generation, with and without packed linears.

Each setting runs in a fresh process (so one's pages never count for the other): load the
model, then greedy ``workbench.generate`` of the first ``--prompts`` JBB harmful prompts x
``--tokens`` new tokens at batch size ``--batch-size``, the sweep's workload. Reported:
the float32 weights' size, resident memory after the load and after the generation, and
the process's peak (``ru_maxrss``). Weights of a cached model are memory-mapped, so the
load alone shows less than the weights; the generation touches all of them.

Usage: ``python benchmarks/bench_memory.py [--model qwen2.5-coder-0.5b-instruct]
[--prompts 32] [--tokens 32] [--out results/benchmarks/memory-<model>.json]``.
A benchmark, not a test: it prints figures and never fails on a small machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CHILD = """
import json, os, resource, sys, time
import torch
import workbench
from workbench.evaluation import load_benchmark

def resident():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

name, n, tokens, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
model = workbench.load_model(name)
weights = sum(p.numel() * p.element_size() for p in model.hf_model.parameters())
loaded = resident()
prompts = load_benchmark("jbb-harmful").prompts[:n]
start = time.perf_counter()
workbench.generate(model, prompts, max_new_tokens=tokens, batch_size=batch)
seconds = time.perf_counter() - start
print(json.dumps({"weights": weights, "after_load": loaded, "after_generate": resident(),
                  "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "seconds": seconds}))
"""


def measure(model: str, packed: bool, prompts: int, tokens: int, batch: int) -> dict:
    env = {**os.environ, "CNA_PACKED_LINEARS": "1" if packed else "0"}
    done = subprocess.run([sys.executable, "-c", CHILD, model, str(prompts), str(tokens),
                           str(batch)], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", help="write the figures as JSON here too")
    args = parser.parse_args(argv)
    rows = {}
    for packed in (False, True):
        rows["packed" if packed else "unpacked"] = measure(args.model, packed, args.prompts,
                                                           args.tokens, args.batch_size)
    mib = 2**20
    print(f"{args.model}: {args.prompts} JBB prompts x {args.tokens} tokens, batch "
          f"{args.batch_size}; float32 weights {rows['packed']['weights'] / mib:,.0f} MiB")
    print("| linears | after load (MiB) | after generate (MiB) | peak (MiB) | generate (s) |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['after_load'] / mib:,.0f} | {row['after_generate'] / mib:,.0f} "
              f"| {row['peak'] / mib:,.0f} | {row['seconds']:.1f} |")
    extra = (rows["packed"]["peak"] - rows["unpacked"]["peak"]) / mib
    print(f"packing adds {extra:,.0f} MiB at the peak "
          f"({extra * mib / rows['packed']['weights']:.0%} of the weights)")
    if args.out:
        record = {"model": args.model, "prompts": args.prompts, "tokens": args.tokens,
                  "batch_size": args.batch_size, "cpus": os.cpu_count(),
                  "measured": time.strftime("%Y-%m-%d"), "settings": rows}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
