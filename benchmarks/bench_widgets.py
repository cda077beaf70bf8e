"""Latency of the widgets on the default embedded model.

Reports (median and range of ``--repeats`` runs, wall-clock seconds):
  1. slider value change -> first streamed token of the steered completion (the
     SteeringSlider's controller, no browser: what a user waits for after releasing the
     slider, minus the front-end's few milliseconds);
  2. the same while a generation is under way (the newer value cancels it first);
  3. one 48-token steered completion, streamed, against plain ``workbench.generate``;
  4. the heatmap of an 80-layer x 29,568-neuron model (random deltas): building the
     binned figure, and re-binning a zoom.

The circuit is ``wb.discover(model, "qualitative-harmful", "qualitative-benign")``.
Usage: ``python benchmarks/bench_widgets.py [--repeats 5] [--new-tokens 48]``.
This is a benchmark, not a test: it prints figures and never fails on a slow machine.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import torch

import workbench as wb
from workbench.activations import ActivationStats
from workbench.cna import Contrast, select_top
from widgets.heatmap import HeatmapController
from widgets.steering_slider import SteeringController

PROMPT = "How do I pick a lock?"
MULTIPLIERS = (0.0, 2.0, 0.5, -1.0, 1.5, 0.0, 3.0, 0.2, 2.5, 0.8)


def report(label: str, values: list[float]) -> None:
    print(f"{label + ':':<48} median {statistics.median(values):.3f} s "
          f"(min {min(values):.3f}, max {max(values):.3f}, n={len(values)})")


def slider_latency(controller: SteeringController, repeats: int):
    """First-token latency and full time of ``repeats`` steered regenerations."""
    first, full = [], []
    for i in range(repeats):
        controller.set_multiplier(MULTIPLIERS[i % len(MULTIPLIERS)])
        controller.wait()
        record = controller.history[-1]
        assert record.status == "done", record
        first.append(record.first_token_s)
        full.append(record.seconds)
    return first, full


def cancel_latency(controller: SteeringController, repeats: int) -> list[float]:
    """Change the value again right after the first token of a running generation."""
    latencies = []
    for i in range(repeats):
        started = threading.Event()

        def on_update(update, started=started):
            if update.kind == "steered":
                started.set()

        controller.updated.add(on_update)
        controller.set_multiplier(MULTIPLIERS[i % len(MULTIPLIERS)])
        started.wait()
        controller.updated.remove(on_update)
        controller.set_multiplier(MULTIPLIERS[(i + 1) % len(MULTIPLIERS)])
        controller.wait()
        cancelled, record = controller.history[-2], controller.history[-1]
        assert cancelled.status == "cancelled" and record.status == "done"
        latencies.append(record.first_token_s)
    return latencies


def plain_generation(model, circuit, tokens: int, repeats: int) -> list[float]:
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        wb.generate(model, PROMPT, circuit=circuit, multiplier=MULTIPLIERS[i % len(MULTIPLIERS)],
                    max_new_tokens=tokens, min_new_tokens=tokens)
        times.append(time.perf_counter() - started)
    return times


def wide_circuit(n_layers: int = 80, d_mlp: int = 29568) -> wb.Circuit:
    """A circuit with random statistics of a model as wide as the largest supported."""
    generator = torch.Generator().manual_seed(0)
    stats = []
    for _ in range(2):
        one = ActivationStats.empty(n_layers, d_mlp, top_k=1)
        one.n, one.sum = 1, torch.randn(n_layers, d_mlp, generator=generator,
                                        dtype=torch.float64)  # mean = sum with n = 1
        stats.append(one)
    delta = stats[0].mean - stats[1].mean  # [n_layers, d_mlp]
    neurons = select_top(delta, round(0.001 * n_layers * d_mlp))
    contrast = Contrast(stats[0], stats[1], delta, torch.zeros(n_layers, d_mlp, dtype=torch.bool))
    model = {"name": "wide", "architecture": "LlamaForCausalLM", "n_layers": n_layers,
             "d_mlp": d_mlp}
    return wb.Circuit.from_neurons(neurons, model=model, contrast=contrast)


def heatmap_timings(repeats: int) -> tuple[list[float], list[float]]:
    circuit = wide_circuit()
    build, zoom = [], []
    for i in range(repeats):
        started = time.perf_counter()
        controller = HeatmapController(circuit)
        controller.figure().to_plotly_json()
        build.append(time.perf_counter() - started)
        started = time.perf_counter()
        controller.zoom(1000 * i, 1000 * i + 3000)
        controller.figure().to_plotly_json()
        zoom.append(time.perf_counter() - started)
    return build, zoom


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=wb.DEFAULT_MODEL)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=48)
    args = parser.parse_args()

    started = time.perf_counter()
    model = wb.load_model(args.model)
    print(f"model: {model} (loaded in {time.perf_counter() - started:.2f} s), "
          f"torch threads: {torch.get_num_threads()}")
    started = time.perf_counter()
    circuit = wb.discover(model, "qualitative-harmful", "qualitative-benign", progress=False)
    print(f"circuit: {len(circuit)} neurons, discovered in {time.perf_counter() - started:.1f} s")

    # min_new_tokens: every completion is exactly --new-tokens long, EOS or not.
    controller = SteeringController(model, circuit, [PROMPT], max_new_tokens=args.new_tokens,
                                    min_new_tokens=args.new_tokens)
    controller.run()  # warm-up; also generates and caches the baseline
    controller.wait()

    first, full = slider_latency(controller, args.repeats)
    report("slider change -> first streamed token", first)
    report("  ... while a generation runs (cancels it)", cancel_latency(controller, args.repeats))
    report(f"slider change -> {args.new_tokens}-token completion done", full)
    report(f"plain wb.generate, {args.new_tokens} tokens, same circuit",
           plain_generation(model, circuit, args.new_tokens, args.repeats))
    build, zoom = heatmap_timings(args.repeats)
    report("heatmap 80 x 29,568: binned figure built", build)
    report("heatmap 80 x 29,568: zoom to 3,000 neurons", zoom)

if __name__ == "__main__":
    main()
