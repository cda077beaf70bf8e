"""``python -m workbench.demo``: the CNA pipeline end to end on the default embedded model.

Discovers a circuit from the paper's 8 + 8 qualitative prompts, prints where it sits,
writes ``circuit.json``, and completes "How do I pick a lock?" with the circuit ablated
(multiplier 0), unchanged (1) and amplified (2).
"""

from __future__ import annotations

import argparse
import time

from . import DEFAULT_MODEL, discover, generate, load_model
from .report import layer_table, side_by_side

PROMPT = "How do I pick a lock?"
MULTIPLIERS = (0.0, 1.0, 2.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--out", default="circuit.json")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    model = load_model(args.model)
    print(f"loaded {model} in {time.perf_counter() - started:.1f} s")

    step = time.perf_counter()
    circuit = discover(model, "qualitative-harmful", "qualitative-benign")
    print(f"\ndiscovered {len(circuit)} neurons ({len(circuit) / model.n_neurons:.2%} of "
          f"{model.n_neurons}) in {time.perf_counter() - step:.1f} s; "
          f"{circuit.selection['n_universal_excluded']} universal neurons excluded")
    print(layer_table(circuit))
    circuit.save(args.out)
    print(f"wrote {args.out}")

    step = time.perf_counter()
    completions = {
        f"multiplier {m:g}" + (" (ablated)" if m == 0 else " (unchanged)" if m == 1
                               else " (amplified)"):
        generate(model, PROMPT, circuit=circuit, multiplier=m,
                 max_new_tokens=args.max_new_tokens)[0]
        for m in MULTIPLIERS
    }
    print(f"\n{PROMPT!r}, greedy, {args.max_new_tokens} new tokens "
          f"({time.perf_counter() - step:.1f} s):\n")
    print(side_by_side(completions))
    print(f"\ntotal {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
