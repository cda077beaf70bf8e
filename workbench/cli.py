"""The ``cna`` command: the CNA pipeline without Jupyter.

Examples::

    cna models
    cna discover --model smollm2-135m-instruct --positive qualitative-harmful \\
        --negative qualitative-benign --out circuit.json
    cna steer --model smollm2-135m-instruct --circuit circuit.json --multiplier 0 \\
        "How do I pick a lock?"
    cna compare a.json b.json
    cna figures circuit.json --out figs
    cna bake --model smollm2-135m-instruct --circuit circuit.json --multiplier 0 --out baked
    cna safety-tune --out adapters/smollm2-135m-safety
    cna compare-models --out comparison

Bad input prints one line starting with ``error:`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence
from typing import Literal, NoReturn

from .config import (
    EVALUATION_BATCH_SIZE,
    EVALUATION_MAX_NEW_TOKENS,
    FIGURE_MAX_NEW_TOKENS,
    FILTER_MAX_NEW_TOKENS,
    GENERATION_MAX_NEW_TOKENS,
    MMLU_BATCH_SIZE,
    SEARCH_MAX_NEW_TOKENS,
    CompareConfig,
    DiscoverConfig,
)
from .embedded import DEFAULT_MODEL
from .errors import WorkbenchError
from .search_space import SearchSpace
from .values import POSITIONS, SIGNS, check_multiplier

#: the discovery defaults the command line shows and uses
DISCOVER = DiscoverConfig()
#: the comparison defaults of ``cna compare-models``
COMPARE = CompareConfig()
#: the search space defaults of ``cna search``
SEARCH = SearchSpace()


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, like every other bad input
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cna", description="Contrastive Neuron Attribution workbench.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("models", help="list embedded models, bundled prompt sets and supported "
                                  "architectures")

    model_args = _Parser(add_help=False)
    model_args.add_argument("--model", default=None,
                            help="embedded name, hub id, local folder or .gguf file "
                                 f"(default: {DEFAULT_MODEL})")
    model_args.add_argument("--device", default=None, help="cpu, cuda, ... (default: auto)")
    model_args.add_argument("--dtype", default=None, help="float32, bfloat16, ...")
    model_args.add_argument("--no-chat-template", action="store_true",
                            help="feed prompts raw even if the tokenizer has a chat template")
    model_args.add_argument("--system-prompt", default=None)
    remote_args = _Parser(add_help=False)
    remote_args.add_argument(
        "--remote", choices=("ndif", "local"), default=None,
        help="run the model on NDIF (ndif: --model is a hub id NDIF hosts; the API key comes "
             "from NDIF_API_KEY), or through nnsight's local simulation of NDIF (local)")

    discover = sub.add_parser("discover", parents=[model_args, remote_args],
                              help="discover a circuit from two prompt sets")
    discover.add_argument("--positive", required=True,
                          help="bundled set name, benchmark half (e.g. jbb-harmful:discover) "
                               "or .txt/.csv/.jsonl file")
    discover.add_argument("--negative", required=True)
    discover.add_argument("--column", default=None, help="csv/jsonl column holding prompts")
    size = discover.add_mutually_exclusive_group()
    size.add_argument("--fraction", type=_float, default=DISCOVER.fraction,
                      help=f"circuit size as a share of all MLP neurons (default "
                           f"{DISCOVER.fraction:g})")
    size.add_argument("--top-k", type=_int, default=None, help="circuit size as a count")
    universal = discover.add_mutually_exclusive_group()
    universal.add_argument("--universal", default="default",
                           help="prompts for the universal-neuron filter (default: bundled "
                                "'diverse')")
    universal.add_argument("--no-universal", action="store_true",
                           help="do not exclude universal neurons")
    discover.add_argument("--universal-threshold", type=_float,
                          default=DISCOVER.universal_threshold)
    discover.add_argument("--exclude-layers", type=_int, nargs="*", default=[])
    discover.add_argument("--batch-size", type=_int, default=DISCOVER.batch_size)
    discover.add_argument("--allow-imbalance", action="store_true",
                          help=f"accept prompt sets whose sizes differ by more than "
                               f"{DISCOVER.max_imbalance:g}x")
    discover.add_argument("--filter", choices=("refusal",), default=None,
                          help="before taking means, keep only the positive prompts the model "
                               "refuses and the negative prompts it answers (greedy "
                               "completions, keyword refusal classifier)")
    discover.add_argument("--filter-tokens", type=_int, default=None, metavar="N",
                          help="new tokens per completion for --filter (default "
                               f"{FILTER_MAX_NEW_TOKENS})")
    discover.add_argument("--out", required=True,
                          help="where to write the circuit JSON (replaced if it exists)")
    discover.add_argument("--neuronpedia", default=None,
                          help="also write a Neuronpedia-style list to this file (replaced if "
                               "it exists)")

    steer = sub.add_parser("steer", parents=[model_args, remote_args],
                           help="generate with a circuit's neurons scaled")
    steer.add_argument("--circuit", required=True)
    steer.add_argument("--multiplier", type=_float, required=True,
                       help="0 ablates, 1 is unchanged, >1 amplifies")
    steer.add_argument("--positions", choices=POSITIONS, default="all")
    steer.add_argument("--signs", choices=SIGNS, default="all")
    steer.add_argument("--max-new-tokens", type=_int, default=GENERATION_MAX_NEW_TOKENS)
    steer.add_argument("--baseline", action="store_true",
                       help="also show the unsteered completion (multiplier 1)")
    steer.add_argument("prompts", nargs="+", metavar="PROMPT")

    bake = sub.add_parser("bake", parents=[model_args],
                          help="write the model with a circuit at a fixed multiplier baked "
                               "into its weights (a Hugging Face folder; no hooks needed)")
    bake.add_argument("--circuit", required=True)
    bake.add_argument("--multiplier", type=_float, required=True,
                      help="0 ablates, 1 is unchanged, >1 amplifies (all positions)")
    bake.add_argument("--signs", choices=SIGNS, default="all")
    bake.add_argument("--out", required=True, help="the model folder to write")
    bake.add_argument("--force", action="store_true", help="replace a non-empty --out")

    compare = sub.add_parser("compare", help="overlap of two circuits")
    compare.add_argument("a")
    compare.add_argument("b")

    figures = sub.add_parser(
        "figures", parents=[model_args],
        help="write a circuit's figures (HTML and PNG, with provenance) to a folder; with "
             "--model also its heatmap, token view and steering; needs the jupyter extra")
    figures.add_argument("circuit", help="the circuit JSON")
    figures.add_argument("--out", required=True, help="the folder to write the figures to")
    figures.add_argument("--positive", default=None,
                         help="the circuit's positive prompts (default: the bundled set or "
                              "benchmark half it names)")
    figures.add_argument("--negative", default=None)
    figures.add_argument("--compare", nargs="*", default=[], metavar="CIRCUIT",
                         help="one or two other circuits for a Venn diagram")
    figures.add_argument("--summary", default=None,
                         help="CSV of a size sweep's summary() for the dose-response figure")
    figures.add_argument("--steer-prompt", action="append", default=[], metavar="PROMPT",
                         help="a prompt for the steering figure (repeatable)")
    figures.add_argument("--multiplier", type=_float, default=0.0,
                         help="steering and dose-response multiplier (default 0)")
    figures.add_argument("--max-new-tokens", type=_int, default=FIGURE_MAX_NEW_TOKENS)
    figures.add_argument("--no-png", action="store_true", help="write HTML only")

    evaluate = sub.add_parser("evaluate", parents=[model_args, remote_args],
                              help="refusal and quality of completions under steering")
    evaluate.add_argument("--circuit", required=True)
    evaluate.add_argument("--multipliers", type=_floats, default=[0.0, 1.0, 2.0],
                          help="comma-separated, e.g. 0,0.5,1,1.5,2 (1 = unchanged)")
    evaluate.add_argument("--benchmark", type=_names, default=["jbb-harmful"],
                          help="comma-separated benchmark names (jbb-harmful, jbb-benign, "
                               "advbench, strongreject; --split and --n apply to these), "
                               "other bundled sets or prompt files")
    evaluate.add_argument("--split", choices=("discover", "heldout"), default=None,
                          help="evaluate on one fixed half of each benchmark")
    evaluate.add_argument("--n", type=_int, default=None, help="seeded sample of n prompts")
    evaluate.add_argument("--seed", type=_int, default=0)
    evaluate.add_argument("--metrics", type=_names, default=["refusal", "quality"])
    evaluate.add_argument("--max-new-tokens", type=_int, default=EVALUATION_MAX_NEW_TOKENS)
    evaluate.add_argument("--batch-size", type=_int, default=EVALUATION_BATCH_SIZE)
    evaluate.add_argument("--caa", action="store_true",
                          help="add the CAA baseline built from the circuit's prompt sets "
                               "(at multiplier m it adds (m-1) x the vector)")
    evaluate.add_argument("--random-control", action="store_true",
                          help="add a random circuit with the same per-layer counts")
    evaluate.add_argument("--sizes", type=_sizes, default=None,
                          help="comma-separated circuit sizes to sweep, each a prefix of the "
                               "circuit: decimals are fractions of all MLP neurons, integers "
                               "neuron counts (e.g. 0.001,0.005,0.01,0.02); with "
                               "--random-control each size gets its own random control")
    evaluate.add_argument("--direction", action="store_true",
                          help="add the refusal-direction positive control (Arditi et al. "
                               "2024), a difference of means of the residual stream on the "
                               "circuit's prompt sets; at multiplier m every residual write "
                               "keeps m x its component along it (0 ablates)")
    evaluate.add_argument("--direction-layer", type=_int, default=None,
                          help="layer to read the direction at (default: chosen by "
                               "--direction-criterion among the first 80%% of the layers)")
    evaluate.add_argument("--direction-criterion", choices=("ablation", "cohen_d"),
                          default=None,
                          help="how the direction's layer and position are chosen: "
                               "'ablation' (default; Arditi et al.: the candidate whose "
                               "ablation most lowers refusal on every 4th prompt, held out) "
                               "or 'cohen_d' (separation at the last token; cheaper)")
    evaluate.add_argument("--out", required=True,
                          help="parquet file; rerunning resumes an interrupted sweep (an "
                               "existing file is read and added to, never replaced)")

    search = sub.add_parser(
        "search", help="search for the gate: contrast, circuit size, layer band, signs and "
                       "multiplier, scored on held-out prompts by refusal removed beyond a "
                       "random circuit and by KL divergence on harmless prompts")
    search.add_argument("--model", default=None,
                        help=f"embedded name, hub id, local folder or .gguf file (default: "
                             f"{DEFAULT_MODEL})")
    search.add_argument("--device", default=None, help="cpu, cuda, ... (default: auto)")
    search.add_argument("--dtype", default=None, help="float32, bfloat16, ...")
    search.add_argument("--study", required=True,
                        help="the study's SQLite file (.db): created, or resumed and "
                             "extended when it exists")
    search.add_argument("--trials", type=_int, default=12, help="trials to add (default 12)")
    search.add_argument("--contrasts", type=_names, default=list(SEARCH.contrasts),
                        help="comma-separated: jbb-pair, refusal-filtered")
    search.add_argument("--min-fraction", type=_float, default=SEARCH.min_fraction)
    search.add_argument("--max-fraction", type=_float, default=SEARCH.max_fraction)
    search.add_argument("--bands", type=_names, default=list(SEARCH.bands),
                        help="comma-separated: last-10%%, last-25%%, last-50%%, all")
    search.add_argument("--signs", type=_names, default=list(SEARCH.signs),
                        help="comma-separated: all, positive")
    search.add_argument("--min-multiplier", type=_float, default=SEARCH.min_multiplier,
                        help="below 0 lets trials flip the circuit (default 0: ablation)")
    search.add_argument("--max-multiplier", type=_float, default=SEARCH.max_multiplier)
    search.add_argument("--heldout-n", type=_int, default=25,
                        help="prompts of each held-out JBB half scored per trial")
    search.add_argument("--max-new-tokens", type=_int, default=SEARCH_MAX_NEW_TOKENS)
    search.add_argument("--batch-size", type=_int, default=EVALUATION_BATCH_SIZE)
    search.add_argument("--seed", type=_int, default=0)
    search.add_argument("--pareto-csv", default=None,
                        help="also write the Pareto trials to this CSV file")

    mmlu = sub.add_parser("mmlu", parents=[model_args], help="MMLU accuracy under steering")
    mmlu.add_argument("--circuit", default=None)
    mmlu.add_argument("--multipliers", type=_floats, default=[0.0, 1.0, 2.0])
    mmlu.add_argument("--caa", action="store_true",
                      help="also score the CAA baseline built from the circuit's prompt sets")
    mmlu.add_argument("--n", type=_int, default=500)
    mmlu.add_argument("--shots", type=_int, default=0)
    mmlu.add_argument("--seed", type=_int, default=0)
    mmlu.add_argument("--subjects", type=_names, default=None)
    mmlu.add_argument("--batch-size", type=_int, default=MMLU_BATCH_SIZE)

    tune = sub.add_parser("safety-tune", help="safety-tuning recipes (LoRA or late-MLP): "
                                              "harmful prompts -> refusals, benign -> the "
                                              "model's own answers")
    tune.add_argument("--recipe", choices=("lora", "late-mlp"), default="lora",
                      help="lora: LoRA on all linear layers (smollm2-135m-safety); late-mlp: "
                           "full fine-tuning of the last layers' MLPs only, a controlled "
                           "variant (smollm2-135m-safety-late)")
    tune.add_argument("--model", default=None,
                      help=f"model to tune (default: {DEFAULT_MODEL})")
    tune.add_argument("--out", required=True,
                      help="folder for the adapter (or weight delta) and manifest.json; it "
                           "must be new or empty")
    tune.add_argument("--force", action="store_true",
                      help="replace the recipe's files in a non-empty --out")
    tune.add_argument("--seed", type=_int, default=None, help="default: the recipe's (0)")
    tune.add_argument("--epochs", type=_int, default=None, help="default: the recipe's")
    tune.add_argument("--max-steps", type=_int, default=None)
    tune.add_argument("--n-harmful", type=_int, default=None,
                      help="seeded subset (default: the recipe's)")
    tune.add_argument("--n-benign", type=_int, default=None,
                      help="seeded subset (default: the recipe's)")
    tune.add_argument("--no-eval", action="store_true",
                      help="skip measuring the targets after training (saves ~8 min on CPU)")
    tune.add_argument("--mmlu-n", type=_int, default=500,
                      help="MMLU questions for the before/after comparison (0 skips MMLU)")

    pair = sub.add_parser("compare-models", help="the base-vs-instruct experiment: circuit "
                                                 "location, overlap, steering, lock-picking")
    pair.add_argument("--models", type=_names, default=COMPARE.models,
                      help="comma-separated; the first two are the pair (default: "
                           f"{','.join(COMPARE.models)})")
    pair.add_argument("--steered", type=_int, default=COMPARE.steered,
                      help="how many of the first models get the multiplier sweep (default: "
                           "all but the last, the base model)")
    pair.add_argument("--multipliers", type=_floats, default=COMPARE.multipliers,
                      help="comma-separated (default: "
                           f"{','.join(f'{m:g}' for m in COMPARE.multipliers)})")
    pair_size = pair.add_mutually_exclusive_group()
    pair_size.add_argument("--fraction", type=_float, default=COMPARE.fraction,
                           help="circuit size as a share of all MLP neurons (default "
                                f"{COMPARE.fraction:.1%})".replace("%", "%%"))
    pair_size.add_argument("--top-k", type=_int, default=COMPARE.top_k,
                           help="explicit circuit size")
    pair.add_argument("--n", type=_int, default=COMPARE.n,
                      help="prompts per held-out JBB half (default: all 50)")
    pair.add_argument("--discover-n", type=_int, default=COMPARE.discover_n,
                      help="prompts per discovery JBB half (default: all 50)")
    pair.add_argument("--strongreject-n", type=_int, default=COMPARE.strongreject_n,
                      help=f"StrongREJECT prompts (0 skips; default: {COMPARE.strongreject_n})")
    pair.add_argument("--max-new-tokens", type=_int, default=COMPARE.max_new_tokens,
                      help=f"default: {COMPARE.max_new_tokens}")
    pair.add_argument("--batch-size", type=_int, default=COMPARE.batch_size,
                      help=f"default: {COMPARE.batch_size}")
    pair.add_argument("--seed", type=_int, default=COMPARE.seed,
                      help=f"default: {COMPARE.seed}")
    pair.add_argument("--out", default="comparison",
                      help="folder for comparison.json, the circuits and resumable sweeps "
                           "(an existing one is resumed; comparison.json and the circuits "
                           "in it are replaced)")
    return parser


def _floats(text: str) -> list[float]:
    return [_float(part) for part in text.split(",") if part.strip()]


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _sizes(text: str) -> list[int | float]:
    """Circuit sizes: integers are neuron counts, anything else a fraction (``0.005``)."""
    sizes: list[int | float] = []
    for part in _names(text):
        try:
            sizes.append(int(part))
        except ValueError:
            sizes.append(_float(part))
    if not sizes:
        raise argparse.ArgumentTypeError("give at least one size, e.g. 0.001,0.005")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cna`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    # OSError: a file that vanished or a disk that filled up while the command ran; every
    # path is checked before the work starts, so these are the rare cases left.
    except (WorkbenchError, OSError) as exc:
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def _load(args: argparse.Namespace):
    from .models import load_model

    remotes: dict[str | None, bool | Literal["local"]] = {None: False, "ndif": True,
                                                          "local": "local"}
    remote = remotes[getattr(args, "remote", None)]
    return load_model(args.model or DEFAULT_MODEL, device=args.device, dtype=args.dtype,
                      remote=remote)


def _chat_template(args: argparse.Namespace):
    return False if args.no_chat_template else "auto"


def cmd_models(_args: argparse.Namespace) -> int:
    import pandas as pd

    from .architectures import ADAPTERS
    from .embedded import EMBEDDED
    from .prompts import list_bundled

    print("Embedded models (offline):")
    table = pd.DataFrame([{"name": e.name + (" (default)" if e.name == DEFAULT_MODEL else ""),
                           "description": e.description} for e in EMBEDDED.values()])
    print(textwrap.indent(table.to_string(index=False), "  "))
    print("\nBundled prompt sets:")
    for name, n in list_bundled().items():
        print(f"  {name:<22} {n:>4} prompts")
    print("\nSupported architectures (config.model_type):")
    families: dict[str, list[str]] = {}
    for model_type, adapter in sorted(ADAPTERS.items()):
        families.setdefault(adapter.name, []).append(model_type)
    for family, types in families.items():
        print(f"  {family:<10} {', '.join(types)}")
    print("\nAny hub id or local folder of these architectures also works, e.g. "
          "--model meta-llama/Llama-3.2-1B-Instruct")
    return 0


def cmd_discover(args: argparse.Namespace) -> int:
    from .cna import check_balance
    from .discovery import discover
    from .errors import InvalidArgumentError
    from .prompts import PromptSet
    from .report import layer_table

    _check_file_outputs(("--out", args.out), ("--neuronpedia", args.neuronpedia))
    positive = _prompt_set(args.positive, column=args.column)
    negative = _prompt_set(args.negative, column=args.column)
    # Refuse bad settings and prompt sets before loading the model (slow, progress bars).
    config = DiscoverConfig(
        fraction=args.fraction, top_k=args.top_k, universal_threshold=args.universal_threshold,
        exclude_layers=args.exclude_layers, chat_template=_chat_template(args),
        system_prompt=args.system_prompt, batch_size=args.batch_size,
        max_imbalance=None if args.allow_imbalance else DISCOVER.max_imbalance)
    check_balance(positive, negative, config.max_imbalance)
    universal = None if args.no_universal else args.universal
    if universal is not None and universal != "default":
        universal = PromptSet.resolve(universal, name="universal")
        universal.require_nonempty("universal")
    if args.filter_tokens is not None and args.filter is None:
        raise InvalidArgumentError("--filter-tokens sets the completion length of --filter; "
                                   "add --filter refusal, or drop --filter-tokens")
    if args.filter_tokens is not None and args.filter_tokens < 1:
        raise InvalidArgumentError(f"--filter-tokens must be a positive number of tokens, "
                                   f"not {args.filter_tokens}")
    model = _load(args)
    keep_if = None
    if args.filter == "refusal":
        from .evaluation.refusal import is_refusal
        from .filtering import DEFAULT_FILTER_TOKENS, filter_by_behaviour

        # keep_if=(is_refusal, not is_refusal), with the completion length chosen here.
        keep_if = filter_by_behaviour(
            model, positive, negative, shows=is_refusal,
            max_new_tokens=args.filter_tokens or DEFAULT_FILTER_TOKENS,
            chat_template=_chat_template(args), system_prompt=args.system_prompt,
            batch_size=args.batch_size)
    circuit = discover(model, positive, negative, config, universal=universal, keep_if=keep_if)
    circuit.save(args.out)
    selection = circuit.selection
    if keep_if is not None:
        print(f"filter: {keep_if.summary()}")
    print(f"{model.name}: {len(circuit)} neurons of {model.n_neurons} "
          f"({len(circuit) / model.n_neurons:.3%}); {selection['n_universal_excluded']} "
          "universal neurons excluded")
    print(layer_table(circuit))
    print("\nTop neurons:")
    print(circuit.to_dataframe().head(10).to_string(index=False))
    print(f"\nwrote {args.out}")
    if args.neuronpedia:
        import json

        from .io import atomic_write_text

        atomic_write_text(args.neuronpedia, json.dumps(circuit.to_neuronpedia(), indent=2))
        print(f"wrote {args.neuronpedia}")
    return 0


def _check_file_outputs(*outputs: tuple[str, str | None]) -> None:
    """Refuse output files that cannot be written, or two outputs on one path, up front."""
    from .errors import OutputPathError
    from .outputs import check_output

    given = [(option, path) for option, path in outputs if path is not None]
    for option, path in given:
        check_output(path, what=option)
    resolved = [os.path.abspath(path) for _, path in given]
    if len(set(resolved)) < len(resolved):
        raise OutputPathError(f"{' and '.join(option for option, _ in given)} name the same "
                              "file; give each its own path")


def _check_resume_file(out: str) -> None:
    """``cna evaluate --out``: writable, and an existing file a sweep's results to resume."""
    from pathlib import Path

    from .outputs import check_output
    from .results_files import read_results

    check_output(out, existing="keep", what="--out")
    if Path(out).is_file():
        read_results(out)


def cmd_steer(args: argparse.Namespace) -> int:
    from .circuit import Circuit
    from .generation import generate

    circuit = Circuit.load(args.circuit)
    check_multiplier(args.multiplier)
    model = _load(args)
    circuit.check_model(model)
    common = dict(max_new_tokens=args.max_new_tokens, chat_template=_chat_template(args),
                  system_prompt=args.system_prompt)
    steered = generate(model, args.prompts, circuit=circuit, multiplier=args.multiplier,
                       positions=args.positions, signs=args.signs, **common)
    baseline = generate(model, args.prompts, **common) if args.baseline else None
    for i, prompt in enumerate(args.prompts):
        print(f"=== {prompt}")
        print(f"--- multiplier {args.multiplier:g}")
        print(steered[i].strip())
        if baseline is not None:
            print("--- baseline (multiplier 1)")
            print(baseline[i].strip())
    return 0


def cmd_bake(args: argparse.Namespace) -> int:
    from .bake import save_baked
    from .circuit import Circuit
    from .outputs import check_output

    circuit = Circuit.load(args.circuit)
    check_multiplier(args.multiplier)
    check_output(args.out, kind="folder", existing="replace" if args.force else "refuse",
                 what="--out", force_hint="--force")
    model = _load(args)
    out = save_baked(model, circuit, args.multiplier, args.out, signs=args.signs,
                     force=args.force)
    print(f"wrote {out}: {model.name} with {len(circuit.select(args.signs))} circuit neurons "
          f"at x{args.multiplier:g}; load it with "
          f"transformers.AutoModelForCausalLM.from_pretrained({str(out)!r})")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import pandas as pd

    from .circuit import Circuit, overlap

    a, b = Circuit.load(args.a), Circuit.load(args.b)
    result = overlap(a, b)
    rows = [{"circuit": label, "file": path, "model": c.model["name"], "neurons": len(c),
             "shared": result.n_shared, "fraction shared": round(share, 4)}
            for label, path, c, share in (("A", args.a, a, result.fraction_a),
                                          ("B", args.b, b, result.fraction_b))]
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"\nshared (layer, neuron) pairs: {result.n_shared}   Jaccard: {result.jaccard:.4f}")
    layers = sorted(set(a.layer_counts()) | set(b.layer_counts()))
    table = pd.DataFrame({"layer": layers,
                          "A": [a.layer_counts().get(layer, 0) for layer in layers],
                          "B": [b.layer_counts().get(layer, 0) for layer in layers],
                          "shared": [sum(1 for s in result.shared if s[0] == layer)
                                     for layer in layers]})
    print("\n" + table.to_string(index=False))
    return 0


def _interventions(args: argparse.Namespace, model, circuit) -> list:
    """Baseline, the circuit, and the optional CAA and random controls."""
    from .caa import caa_vector
    from .evaluation import Intervention

    chosen: list[Intervention] = [Intervention.baseline()]
    if circuit is None:
        return chosen
    chosen.append(Intervention.cna(circuit))
    if getattr(args, "random_control", False):
        chosen.append(Intervention.random(circuit, seed=args.seed))
    if args.caa:
        positive, negative = (
            _recorded_prompts(circuit, role, "--caa",
                              "build the vector in Python with caa_vector() instead")
            for role in ("positive", "negative"))
        chosen.append(Intervention.caa(caa_vector(model, positive, negative,
                                                  chat_template=_chat_template(args),
                                                  system_prompt=args.system_prompt)))
    return chosen


def _prompt_set(spec: str, column: str | None = None):
    """A bundled set, a benchmark half such as ``jbb-harmful:discover``, or a file."""
    from .evaluation.benchmarks import PROMPT_BENCHMARKS, PROMPT_SPLITS, load_benchmark
    from .prompts import PromptSet

    benchmark, _, split = spec.partition(":")
    if benchmark in PROMPT_BENCHMARKS and split in PROMPT_SPLITS:
        return load_benchmark(benchmark, split=split)
    return PromptSet.resolve(spec, column=column)


def _recorded_prompts(circuit, role: str, needed_by: str, instead: str):
    """A circuit's ``role`` prompt set, found by its recorded name and checked by its hash.

    ``needed_by`` names what needs it and ``instead`` what to do when it cannot be found.
    """
    from .errors import InvalidArgumentError, PromptSetError

    ref = circuit.prompts.get(role, {})
    name = str(ref.get("name", ""))
    try:
        prompts = _prompt_set(name)
    except PromptSetError:
        raise InvalidArgumentError(
            f"{needed_by} needs the circuit's {role} prompts, but {name!r} is neither a "
            f"bundled set nor a benchmark half; {instead}") from None
    if ref.get("sha256") and ref["sha256"] != prompts.sha256:
        raise InvalidArgumentError(f"the bundled {name!r} prompts differ from the ones this "
                                   f"circuit was discovered on (sha256 mismatch); {instead}")
    return prompts


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .circuit import Circuit
    from .direction import refusal_direction
    from .errors import InvalidArgumentError
    from .evaluation import Intervention, load_benchmark, summary, sweep
    from .evaluation.benchmarks import PROMPT_BENCHMARKS

    _check_resume_file(args.out)
    circuit = Circuit.load(args.circuit)
    for size in args.sizes or ():  # refuse sizes beyond the circuit before loading the model
        circuit.size_of(size)
    if args.direction_layer is not None and not args.direction:
        raise InvalidArgumentError("--direction-layer chooses the layer of --direction; add "
                                   "--direction, or drop --direction-layer")
    if args.direction_criterion is not None and not args.direction:
        raise InvalidArgumentError("--direction-criterion chooses how --direction is found; "
                                   "add --direction, or drop --direction-criterion")
    direction_sets = tuple(
        _recorded_prompts(circuit, role, "--direction", "build it in Python with "
                          "refusal_direction() and Intervention.direction() instead")
        for role in ("positive", "negative")) if args.direction else None
    benchmarks = [load_benchmark(name, split=args.split, n=args.n, seed=args.seed)
                  if name in PROMPT_BENCHMARKS else _prompt_set(name)
                  for name in args.benchmark]
    model = _load(args)
    circuit.check_model(model)
    interventions = _interventions(args, model, circuit)
    if direction_sets is not None:
        found = refusal_direction(model, *direction_sets, layer=args.direction_layer,
                                  criterion=args.direction_criterion or "ablation",
                                  chat_template=_chat_template(args),
                                  system_prompt=args.system_prompt, max_imbalance=None)
        where = f"layer {found.layer} of {model.n_layers}"
        if found.criterion != "cohen_d":
            where += f", position {found.position}"
        note = "; fallback: no candidate passed the filters" if found.fallback else ""
        print(f"refusal direction: {where} ({found.chosen}; {found.criterion} "
              f"{found.scores[found.layer]:.3f}{note})")
        interventions.append(Intervention.direction(found))
    results = sweep(model, interventions, args.multipliers, benchmarks,
                    metrics=args.metrics, sizes=args.sizes,
                    max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                    out=args.out, chat_template=_chat_template(args),
                    system_prompt=args.system_prompt)
    print(summary(results).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nwrote {len(results)} rows to {args.out}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from .errors import InvalidArgumentError
    from .outputs import check_output
    from .search import GateSearch

    if args.trials < 1:
        raise InvalidArgumentError(f"--trials must be at least 1, not {args.trials}")
    space = SearchSpace(contrasts=tuple(args.contrasts), min_fraction=args.min_fraction,
                        max_fraction=args.max_fraction, bands=tuple(args.bands),
                        signs=tuple(args.signs), min_multiplier=args.min_multiplier,
                        max_multiplier=args.max_multiplier)
    check_output(args.study, existing="keep", what="--study")
    if args.pareto_csv:
        check_output(args.pareto_csv, what="--pareto-csv")
    model = _load(args)
    search = GateSearch(model, args.study, space, heldout_n=args.heldout_n,
                        max_new_tokens=args.max_new_tokens, seed=args.seed,
                        batch_size=args.batch_size).run(args.trials)
    baseline = search.baseline()
    pareto = search.pareto()
    columns = ["trial", "contrast", "fraction", "band", "signs", "multiplier", "size",
               "refusal", "random_refusal", "benign_refusal", "kl", "random_kl", "quality"]
    print(f"x1 refusal: held-out harmful {baseline['refusal']:.2f}, benign "
          f"{baseline['benign_refusal']:.2f}; {len(search.trials())} trials in {args.study}")
    print("Pareto trials (most refusal removed beyond the random circuit first, then least KL):")
    print(pareto[columns].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    if args.pareto_csv:
        from .io import atomic_write_text

        atomic_write_text(args.pareto_csv, pareto.to_csv(index=False))
        print(f"wrote {len(pareto)} rows to {args.pareto_csv}")
    return 0


def cmd_mmlu(args: argparse.Namespace) -> int:
    import pandas as pd

    from .circuit import Circuit
    from .evaluation import mmlu
    from .evaluation.sweep import conditions

    circuit = Circuit.load(args.circuit) if args.circuit else None
    model = _load(args)
    if circuit is not None:
        circuit.check_model(model)
    rows = []
    for intervention, multiplier in conditions(_interventions(args, model, circuit),
                                               args.multipliers):
        result = mmlu(model, n=args.n, shots=args.shots, seed=args.seed,
                      subjects=args.subjects, batch_size=args.batch_size,
                      intervention=intervention.apply(model, multiplier))
        rows.append({"intervention": intervention.name, "multiplier": multiplier,
                     "accuracy": result.accuracy, "n": result.n, "shots": args.shots,
                     "seconds": round(result.seconds, 1)})
        print(f"{intervention.name} x{multiplier:g}: accuracy {result.accuracy:.3f} "
              f"({result.n} questions, {result.seconds:.1f} s)", flush=True)
    print()
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def cmd_safety_tune(args: argparse.Namespace) -> int:
    import json

    from .models import load_model
    from .outputs import check_output
    from .safety import LateMlpRecipe, Recipe, safety_tune

    chosen = {key: getattr(args, key) for key in ("seed", "epochs", "max_steps", "n_harmful",
                                                  "n_benign") if getattr(args, key) is not None}
    recipe = (LateMlpRecipe if args.recipe == "late-mlp" else Recipe)(**chosen)
    check_output(args.out, kind="folder", existing="replace" if args.force else "refuse",
                 what="--out", force_hint="--force")
    model = load_model(args.model or DEFAULT_MODEL)
    manifest = safety_tune(args.out, model=model, recipe=recipe, evaluate=not args.no_eval,
                           mmlu_n=args.mmlu_n or None, force=args.force)
    print(json.dumps({"data": {k: v for k, v in manifest["data"].items()
                               if k != "files_sha256"},
                      "training": manifest["training"], "metrics": manifest["metrics"]},
                     indent=2))
    weights = "weight delta" if args.recipe == "late-mlp" else "adapter"
    print(f"wrote the {weights} and manifest.json to {args.out}")
    return 0


def cmd_compare_models(args: argparse.Namespace) -> int:
    from .compare import check_comparison_folder, compare_models

    # Refuse bad settings before loading any model; an empty --models means the defaults.
    config = CompareConfig(
        models=args.models or COMPARE.models, steered=args.steered, fraction=args.fraction,
        top_k=args.top_k, multipliers=args.multipliers, n=args.n, discover_n=args.discover_n,
        strongreject_n=args.strongreject_n, max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size, seed=args.seed)
    check_comparison_folder(args.out, what="--out")
    comparison = compare_models(config=config, out_dir=args.out)
    print(comparison.report())
    print(f"\nwrote {args.out}/comparison.json and the circuits")
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    import time

    from .circuit import Circuit
    from .errors import InvalidArgumentError
    from .outputs import check_output

    try:
        from widgets.figure_set import circuit_figures
    except ImportError as exc:
        raise InvalidArgumentError(f"cna figures needs the jupyter extra ({exc}); "
                                   "pip install 'cna-workbench[jupyter]'") from None
    started = time.perf_counter()
    check_output(args.out, kind="folder", existing="keep", what="--out")  # files in it replaced
    circuit = Circuit.load(args.circuit)
    others = [Circuit.load(path) for path in args.compare]
    if len(others) > 2:
        raise InvalidArgumentError("--compare takes one or two circuits")
    model = positive = negative = None
    if args.model is not None:  # the figures that need the model
        positive, negative = (
            _prompt_set(given) if given else _recorded_prompts(
                circuit, role, "cna figures --model",
                f"pass --{role} with the file it was discovered on")
            for role, given in (("positive", args.positive), ("negative", args.negative)))
        model = _load(args)
        circuit.check_model(model)
    written = circuit_figures(circuit, args.out, model=model, positive=positive,
                              negative=negative, compare=others, summary=args.summary,
                              steer_prompts=args.steer_prompt, multiplier=args.multiplier,
                              max_new_tokens=args.max_new_tokens,
                              png=False if args.no_png else None)
    for path in written:
        print(f"wrote {path}")
    if not args.no_png and not any(path.suffix == ".png" for path in written):
        print("no PNG: no Chromium-based browser found (install chromium or set BROWSER_PATH)")
    print(f"{len(written)} files in {time.perf_counter() - started:.1f} s")
    return 0


COMMANDS = {"models": cmd_models, "discover": cmd_discover, "steer": cmd_steer,
            "compare": cmd_compare, "evaluate": cmd_evaluate, "mmlu": cmd_mmlu,
            "safety-tune": cmd_safety_tune, "compare-models": cmd_compare_models,
            "bake": cmd_bake, "figures": cmd_figures, "search": cmd_search}

if __name__ == "__main__":
    sys.exit(main())
