"""Completion lengths and batch sizes are written once, in :mod:`workbench.config`.

The library's functions, the ``cna`` command and the demo take their defaults from the
named constants there (the widgets' are checked in ``tests/widgets/test_defaults.py``),
and no signature, dataclass field or command-line option in ``workbench/`` or
``widgets/`` spells one out as a number again.
"""

from __future__ import annotations

import argparse
import ast
import inspect
from pathlib import Path

import pytest

import workbench
from workbench import config, demo
from workbench.activations import collect
from workbench.cli import build_parser
from workbench.config import (
    COMPARISON_MAX_NEW_TOKENS,
    EVALUATION_BATCH_SIZE,
    EVALUATION_MAX_NEW_TOKENS,
    FIGURE_MAX_NEW_TOKENS,
    FILTER_MAX_NEW_TOKENS,
    FORWARD_BATCH_SIZE,
    GENERATION_BATCH_SIZE,
    GENERATION_MAX_NEW_TOKENS,
    MMLU_BATCH_SIZE,
    SEARCH_MAX_NEW_TOKENS,
    STEERING_VIEW_MAX_NEW_TOKENS,
    CompareConfig,
    DiscoverConfig,
)
from workbench.direction import refusal_direction
from workbench.divergence import divergence, greedy_steps
from workbench.evaluation.drift import HarmlessDrift
from workbench.evaluation.mmlu import mmlu
from workbench.evaluation.sweep import sweep
from workbench.filtering import (
    DEFAULT_FILTER_TOKENS,
    apply_keep_if,
    filter_by_behaviour,
    split_by_behaviour,
)
from workbench.neurons import neuron_activations
from workbench.safety.metrics import gate_metrics, safety_metrics, unused_benign_refusal
from workbench.search import GateSearch
from workbench.caa import caa_vector
from workbench.streaming import stream_generate
from workbench.tokens import token_activations

ROOT = Path(__file__).resolve().parents[2]
#: Parameters, dataclass fields and command-line options that must never default to a number.
NAMES = ("max_new_tokens", "batch_size", "filter_tokens")
OPTIONS = ("--max-new-tokens", "--batch-size", "--filter-tokens")
#: Training hyper-parameters recorded in the manifests of the published adapters, kept
#: with the rest of their recipe rather than shared as library defaults.
RECIPES = ("Recipe", "LateMlpRecipe")


def _default(function, name):
    return inspect.signature(function).parameters[name].default


def test_the_constants_keep_their_values():
    # The committed runs and docs state these (e.g. "64 new tokens" for the safety targets).
    assert (GENERATION_MAX_NEW_TOKENS, EVALUATION_MAX_NEW_TOKENS, COMPARISON_MAX_NEW_TOKENS,
            STEERING_VIEW_MAX_NEW_TOKENS, FILTER_MAX_NEW_TOKENS, SEARCH_MAX_NEW_TOKENS,
            FIGURE_MAX_NEW_TOKENS) == (64, 64, 48, 48, 32, 32, 32)
    assert (GENERATION_BATCH_SIZE, FORWARD_BATCH_SIZE, EVALUATION_BATCH_SIZE,
            MMLU_BATCH_SIZE) == (8, 16, 32, 8)


@pytest.mark.parametrize(("function", "name", "expected"), [
    (workbench.generate, "max_new_tokens", GENERATION_MAX_NEW_TOKENS),
    (workbench.generate, "batch_size", GENERATION_BATCH_SIZE),
    (stream_generate, "max_new_tokens", GENERATION_MAX_NEW_TOKENS),
    (sweep, "max_new_tokens", EVALUATION_MAX_NEW_TOKENS),
    (sweep, "batch_size", EVALUATION_BATCH_SIZE),
    (safety_metrics, "max_new_tokens", EVALUATION_MAX_NEW_TOKENS),
    (safety_metrics, "batch_size", EVALUATION_BATCH_SIZE),
    (unused_benign_refusal, "max_new_tokens", EVALUATION_MAX_NEW_TOKENS),
    (unused_benign_refusal, "batch_size", EVALUATION_BATCH_SIZE),
    (gate_metrics, "max_new_tokens", EVALUATION_MAX_NEW_TOKENS),
    (gate_metrics, "batch_size", EVALUATION_BATCH_SIZE),
    (GateSearch, "max_new_tokens", SEARCH_MAX_NEW_TOKENS),
    (GateSearch, "batch_size", EVALUATION_BATCH_SIZE),
    (greedy_steps, "max_new_tokens", STEERING_VIEW_MAX_NEW_TOKENS),
    (divergence, "max_new_tokens", STEERING_VIEW_MAX_NEW_TOKENS),
    (filter_by_behaviour, "max_new_tokens", FILTER_MAX_NEW_TOKENS),
    (split_by_behaviour, "max_new_tokens", FILTER_MAX_NEW_TOKENS),
    # The behaviour filter is a step of discovery and generates in its batches.
    (filter_by_behaviour, "batch_size", FORWARD_BATCH_SIZE),
    (split_by_behaviour, "batch_size", FORWARD_BATCH_SIZE),
    (apply_keep_if, "batch_size", FORWARD_BATCH_SIZE),
    (collect, "batch_size", FORWARD_BATCH_SIZE),
    (caa_vector, "batch_size", FORWARD_BATCH_SIZE),
    (token_activations, "batch_size", FORWARD_BATCH_SIZE),
    (neuron_activations, "batch_size", FORWARD_BATCH_SIZE),
    (refusal_direction, "batch_size", FORWARD_BATCH_SIZE),
    (HarmlessDrift, "batch_size", FORWARD_BATCH_SIZE),
    (mmlu, "batch_size", MMLU_BATCH_SIZE),
], ids=lambda value: getattr(value, "__qualname__", None) or str(value))
def test_library_defaults_are_the_config_constants(function, name, expected):
    assert _default(function, name) == expected


def test_config_records_use_the_constants():
    assert DiscoverConfig().batch_size == FORWARD_BATCH_SIZE
    assert CompareConfig().max_new_tokens == COMPARISON_MAX_NEW_TOKENS
    assert CompareConfig().batch_size == EVALUATION_BATCH_SIZE
    assert DEFAULT_FILTER_TOKENS == FILTER_MAX_NEW_TOKENS


@pytest.mark.parametrize(("argv", "expected"), [
    (["steer", "--circuit", "c.json", "--multiplier", "0", "Hi"],
     {"max_new_tokens": GENERATION_MAX_NEW_TOKENS}),
    (["evaluate", "--circuit", "c.json", "--out", "o.parquet"],
     {"max_new_tokens": EVALUATION_MAX_NEW_TOKENS, "batch_size": EVALUATION_BATCH_SIZE}),
    (["search", "--study", "s.db"],
     {"max_new_tokens": SEARCH_MAX_NEW_TOKENS, "batch_size": EVALUATION_BATCH_SIZE}),
    (["mmlu"], {"batch_size": MMLU_BATCH_SIZE}),
    (["figures", "c.json", "--out", "figs"], {"max_new_tokens": FIGURE_MAX_NEW_TOKENS}),
    (["discover", "--positive", "p", "--negative", "n", "--out", "c.json"],
     {"batch_size": FORWARD_BATCH_SIZE, "filter_tokens": None}),
    (["compare-models"],
     {"max_new_tokens": COMPARISON_MAX_NEW_TOKENS, "batch_size": EVALUATION_BATCH_SIZE}),
], ids=lambda value: value[0] if isinstance(value, list) else None)
def test_cli_defaults_are_the_config_constants(argv, expected):
    args = vars(build_parser().parse_args(argv))
    assert {name: args[name] for name in expected} == expected


def test_cli_help_shows_the_filter_length_from_config():
    parser = build_parser()
    subcommands = next(action for action in parser._actions
                       if isinstance(action, argparse._SubParsersAction))
    help_text = subcommands.choices["discover"].format_help()
    assert f"(default {FILTER_MAX_NEW_TOKENS})" in " ".join(help_text.split())


class _Parsed(Exception):
    pass


def test_demo_defaults_to_the_comparison_length(monkeypatch):
    parsed = {}
    parse_args = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):
        parsed["args"] = parse_args(self, args, namespace)
        raise _Parsed  # before the model loads

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
    with pytest.raises(_Parsed):
        demo.main([])
    assert parsed["args"].max_new_tokens == COMPARISON_MAX_NEW_TOKENS


def literal_defaults(root: Path) -> list[str]:
    """``file:line name=value`` for every completion length or batch size that ``workbench/``
    and ``widgets/`` under ``root`` spell out as a number instead of naming a constant."""
    found = []

    def check(path: Path, node: ast.AST | None, name: str) -> None:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            found.append(f"{path.relative_to(root)}:{node.lineno} {name}={node.value}")

    for package in ("workbench", "widgets"):
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                    args = node.args
                    positional = args.posonlyargs + args.args
                    pairs = [*zip(positional[len(positional) - len(args.defaults):],
                                  args.defaults), *zip(args.kwonlyargs, args.kw_defaults)]
                    for arg, default in pairs:
                        if arg.arg in NAMES:
                            check(path, default, arg.arg)
                elif isinstance(node, ast.ClassDef) and node.name not in RECIPES:
                    for statement in node.body:
                        if isinstance(statement, ast.AnnAssign) \
                                and isinstance(statement.target, ast.Name) \
                                and statement.target.id in NAMES:
                            check(path, statement.value, f"{node.name}.{statement.target.id}")
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                        and node.func.attr == "add_argument":
                    flags = [a.value for a in node.args if isinstance(a, ast.Constant)]
                    for keyword in node.keywords:
                        if keyword.arg == "default" and set(flags) & set(OPTIONS):
                            check(path, keyword.value, flags[0])
    return found


def test_no_completion_length_or_batch_size_is_a_literal_default():
    assert literal_defaults(ROOT) == [], (
        f"name a constant of {config.__name__} instead of repeating the number")
