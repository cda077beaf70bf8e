"""One linear layer: plain ``F.linear`` (MKL ``sgemm``) against the packed oneDNN kernel.

The shapes are SmolLM2-135M's (MLP up/gate and down projections, the language-model
head), the rows those of a decode step (1 to 64) and of a prefill (128 to 2048). Both
kernels run on the same weight and input in each measurement; medians of 5 timings of
repeated calls. This is the measurement behind :mod:`workbench.packing` and its
``PLAIN_ABOVE_ROWS``; ``benchmarks/bench_generation.py`` gives what it does to generation.

Note that a weight reused call after call stays in the processor's caches, which a
model's decode step (every weight once) does not allow: the in-model gain is smaller.

Usage: ``python benchmarks/bench_linear.py``. A benchmark: it prints figures, never fails.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from workbench.packing import PACKED_FOR_ROWS, kernel_works

SHAPES = {"up/gate 1536x576": (1536, 576), "down 576x1536": (576, 1536),
          "lm head 49152x576": (49152, 576)}
ROWS = (1, 8, 32, 64, 128, 256, 512, 1024, 2048)


def per_call_ms(fn: Callable[[], object], calls: int) -> float:
    fn()
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - started) / calls * 1000)
    return statistics.median(samples)


def main() -> None:
    if not kernel_works():
        print("oneDNN's packed linear is not available here")
        return
    torch.manual_seed(0)
    print(f"{torch.get_num_threads()} threads; weights packed for {PACKED_FOR_ROWS} rows")
    print(f"{'layer':<18} {'rows':>5} {'sgemm ms':>9} {'packed ms':>10} {'ratio':>6}")
    with torch.no_grad():
        for name, (out_features, in_features) in SHAPES.items():
            weight = torch.randn(out_features, in_features)  # [out, in]
            packed = torch.ops.mkldnn._reorder_linear_weight(weight, PACKED_FOR_ROWS)
            for rows in ROWS:
                if out_features * rows > 49152 * 256:
                    continue  # the head runs on the last position only
                x = torch.randn(rows, in_features)  # [rows, in]
                calls = max(2, 4000 // (rows * max(1, out_features // 1536)))
                plain = per_call_ms(lambda: F.linear(x, weight), calls)
                fast = per_call_ms(lambda: torch.ops.mkldnn._linear_pointwise(
                    x, packed, None, "none", [], ""), calls)
                print(f"{name:<18} {rows:>5} {plain:>9.2f} {fast:>10.2f} {plain / fast:>5.2f}x")


if __name__ == "__main__":
    main()
