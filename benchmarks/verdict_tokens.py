"""How many decode steps a refusal-only sweep could skip by stopping at the verdict.

The keyword classifier (:func:`workbench.evaluation.is_refusal`) reads only the first
:data:`~workbench.evaluation.refusal.REFUSAL_WINDOW` characters of a completion (after
leading whitespace and markers are stripped), so once a row has that many characters (plus
a margin of 8 for a multi-byte character still being decoded) its verdict cannot change and
the rest of its tokens feed only the quality score. This script reads completions a sweep
has already written (``results/replication/<model>/<stage>.parquet``), re-tokenises each
and reports at which token its verdict became fixed, and the share of all generated
tokens (row-steps of a continuous batch) after that point: the most that stopping there
could save. It runs no model (the embedded model's cache must hold its tokenizer).

Usage: ``python benchmarks/verdict_tokens.py [--stages split,benign] [model ...]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import pandas as pd
from transformers import AutoTokenizer

from workbench.embedded import cached_weights_dir
from workbench.evaluation.refusal import _LEADING, REFUSAL_WINDOW

RESULTS = Path(__file__).resolve().parents[1] / "results" / "replication"
MARGIN = 8  # characters past the window, for a multi-byte character still being decoded


def fixed_at(tokenizer, completion: str) -> tuple[int, int]:
    """(token at which the verdict is fixed, tokens in all) of one completion."""
    ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    for j in range(1, len(ids) + 1):
        if len(_LEADING.sub("", tokenizer.decode(ids[:j]))) >= REFUSAL_WINDOW + MARGIN:
            return j, len(ids)
    return len(ids), len(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*",
                        default=["qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"])
    parser.add_argument("--stages", default="split,benign")
    args = parser.parse_args()
    print("| model | completions | max new tokens | mean tokens | median token where the "
          "verdict is fixed | rows that reach it early | share of tokens after it |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        tokenizer = AutoTokenizer.from_pretrained(cached_weights_dir(name))
        folder = RESULTS / name
        frames = [pd.read_parquet(folder / f"{stage}.parquet")
                  for stage in args.stages.split(",")]
        completions = pd.concat(frames).completion
        pairs = [fixed_at(tokenizer, text) for text in completions]
        needed, total = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
        early = sum(p[0] < p[1] for p in pairs) / len(pairs)
        longest = json.loads((folder / "run.json").read_text())["settings"]["max_new_tokens"]
        print(f"| {name} | {len(pairs)} | {longest} | {total / len(pairs):.1f} | "
              f"{statistics.median(p[0] for p in pairs):.0f} | {100 * early:.0f}% | "
              f"{100 * (1 - needed / total):.1f}% |")


if __name__ == "__main__":
    main()
