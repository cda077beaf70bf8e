"""Discover a circuit on a model: :func:`discover`, exported as ``workbench.discover``.

It runs Contrastive Neuron Attribution (:mod:`workbench.cna`) on a model: it resolves the
prompt sets and the settings, optionally keeps only the prompts whose completions show a
behaviour (:mod:`workbench.filtering`, ``keep_if=``), collects the activations of both
sets and of the universal set (:mod:`workbench.activations`), ranks the neurons by
``|delta|`` and returns the :class:`~workbench.circuit.Circuit` with its provenance.

This module sits above the algorithm and the behaviour filter, which needs generation, so
that the algorithm itself depends on neither.

Example:
    >>> from workbench import load_model, discover
    >>> model = load_model()                                              # doctest: +SKIP
    >>> circuit = discover(model, "qualitative-harmful", "qualitative-benign")  # doctest: +SKIP
    >>> len(circuit)                                                      # doctest: +SKIP
    46
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch

from .activation_stats import ActivationStats
from .activations import collect
from .circuit import Circuit
from .cna import (
    UNIVERSAL_TOP_FRACTION,
    _normalise_layers,
    check_balance,
    circuit_size,
    select_top,
    universal_neurons,
)
from .config import DiscoverConfig
from .contrast import Contrast
from .errors import InvalidArgumentError
from .filtering import FilteredPair, apply_keep_if
from .models import WorkbenchModel
from .prompts import Prompting, PromptSet
from .stats_cache import cacheable, cached_stats

PromptsLike = PromptSet | str | Sequence[str]


def discover(model: WorkbenchModel, positive: PromptsLike, negative: PromptsLike,
             config: DiscoverConfig | Mapping[str, Any] | None = None, *,
             universal: Literal["default"] | PromptsLike | None = "default",
             keep_activations: bool = False, progress: bool = True,
             on_progress: Callable[[str, int, int], None] | None = None,
             keep_if: tuple[Callable[[str], bool], Callable[[str], bool]] | FilteredPair
             | None = None, **overrides: Any) -> Circuit:
    """Discover the circuit that separates ``positive`` from ``negative`` prompts.

    Args:
        positive, negative: PromptSets, bundled names, file paths, or lists of strings.
        config: the settings that shape the circuit (:class:`~workbench.config.DiscoverConfig`:
            ``fraction`` (default 0.1%) or ``top_k``, ``universal_threshold``,
            ``exclude_layers``, ``chat_template``, ``system_prompt``, ``max_imbalance``,
            ``batch_size``); saved in ``circuit.selection["config"]``.
        **overrides: any of those settings by name, over ``config`` (or the defaults),
            e.g. ``discover(model, pos, neg, top_k=200)``; ``fraction=`` alone also clears
            the config's ``top_k``.
        universal: prompts for the universal-neuron filter: ``"default"`` (the bundled
            ``diverse`` set), another prompt set, or None to switch the filter off.
        keep_activations: retain per-prompt activations in ``circuit.contrast`` for plots.
        on_progress: called after every batch with ``(stage, prompts done, total)``, where
            stage is ``"filter"``, ``"positive"``, ``"negative"`` or ``"universal"`` (the
            universal set's statistics are cached per model, so later runs skip that stage).
        keep_if: behaviour filter before the means (see :mod:`workbench.filtering`): a pair
            ``(keep_positive_if, keep_negative_if)`` of completion classifiers, e.g.
            ``(is_refusal, not_refusal)`` (greedy completions of 32 tokens, formatted as
            here), or a :class:`~workbench.filtering.FilteredPair` made from these sets.
            Counts and classifier names go to ``circuit.selection["filter"]``.

    Returns:
        A :class:`~workbench.circuit.Circuit`; ``circuit.contrast`` holds the deltas.

    Example:
        >>> circuit = discover(model, "jbb-harmful", "jbb-benign", top_k=200)  # doctest: +SKIP
        >>> from workbench.evaluation import is_refusal
        >>> from workbench.filtering import not_refusal
        >>> circuit = discover(model, "jbb-harmful", "jbb-benign",
        ...                    keep_if=(is_refusal, not_refusal))                # doctest: +SKIP
        >>> circuit.selection["filter"]["positive"]["kept"]                    # doctest: +SKIP
        41
    """
    if isinstance(config, Mapping):  # e.g. circuit.selection["config"] of a saved circuit
        config = DiscoverConfig.from_dict(config)
    elif config is not None and not isinstance(config, DiscoverConfig):
        raise InvalidArgumentError(f"config must be a DiscoverConfig (or its dict), not "
                                   f"{config!r}; prompt sets are the 2nd and 3rd arguments")
    if "fraction" in overrides and "top_k" not in overrides:
        overrides["top_k"] = None  # a size given as a fraction replaces the config's top_k
    config = (config or DiscoverConfig()).replace(**overrides)
    batch_size = config.batch_size
    positive = PromptSet.resolve(positive, name="positive")
    negative = PromptSet.resolve(negative, name="negative")
    check_balance(positive, negative, config.max_imbalance)
    n_layers, d_mlp = model.n_layers, model.d_mlp
    k = circuit_size(n_layers, d_mlp, config.fraction, config.top_k)
    excluded_layers = _normalise_layers(config.exclude_layers, n_layers)
    prompting = model.prompting(config.chat_template, config.system_prompt)
    filtered = None
    if keep_if is not None:
        filtered = apply_keep_if(model, positive, negative, keep_if,
                                 chat_template=prompting.chat_template,
                                 system_prompt=prompting.system_prompt, batch_size=batch_size,
                                 progress=progress, max_imbalance=config.max_imbalance,
                                 on_progress=on_progress)
        positive, negative = filtered.positive, filtered.negative

    pos_stats = collect(model, positive, prompting=prompting, batch_size=batch_size,
                        keep=keep_activations, progress=progress,
                        on_batch=_stage(on_progress, "positive"))
    neg_stats = collect(model, negative, prompting=prompting, batch_size=batch_size,
                        keep=keep_activations, progress=progress,
                        on_batch=_stage(on_progress, "negative"))
    delta = pos_stats.mean - neg_stats.mean  # [n_layers, d_mlp] float64
    broken = int((~torch.isfinite(delta)).sum())
    if broken:  # NaN sorts anywhere: never rank it
        raise InvalidArgumentError(
            f"{broken} of the model's MLP neurons have NaN or infinite mean activations on "
            f"these prompts, so they cannot be ranked; the weights of {model.name} are "
            "damaged, or its dtype overflows: load it again, or in float32")

    universal_set = _universal_set(universal)
    universal_stats = None
    universal_mask = torch.zeros(n_layers, d_mlp, dtype=torch.bool)
    if universal_set is not None:
        universal_set.require_nonempty("universal")
        universal_stats = _cached_universal_stats(model, universal_set, prompting, batch_size,
                                                  progress, _stage(on_progress, "universal"))
        universal_mask = universal_neurons(universal_stats, config.universal_threshold)
    excluded = universal_mask.clone()
    for layer in excluded_layers:
        excluded[layer] = True

    neurons = select_top(delta, k, excluded)
    prompt_refs = {"positive": _ref(positive), "negative": _ref(negative)}
    if universal_set is not None:
        prompt_refs["universal"] = _ref(universal_set)
    return Circuit.from_neurons(
        neurons,
        model=model,
        prompting=prompting.to_dict(),
        selection={
            "method": "cna",
            "fraction": None if config.top_k is not None else config.fraction,
            "top_k": k,
            "universal_threshold": (config.universal_threshold if universal_set is not None
                                    else None),
            "n_universal_excluded": int(universal_mask.sum()),
            "excluded_layers": excluded_layers,
            **({"filter": filtered.provenance()} if filtered is not None else {}),
            "config": config.to_dict(),
        },
        prompts=prompt_refs,
        contrast=Contrast(pos_stats, neg_stats, delta, universal_mask, universal_stats),
    )


def _universal_set(universal: Literal["default"] | PromptsLike | None) -> PromptSet | None:
    if universal is None:
        return None
    if isinstance(universal, str) and universal == "default":
        return PromptSet.bundled("diverse")
    return PromptSet.resolve(universal, name="universal")


def _stage(on_progress: Callable[[str, int, int], None] | None,
           stage: str) -> Callable[[int, int], None] | None:
    """A per-batch callback of ``collect`` that reports ``stage`` to ``on_progress``."""
    if on_progress is None:
        return None
    return lambda done, total: on_progress(stage, done, total)


def _cached_universal_stats(model: WorkbenchModel, prompts: PromptSet, prompting: Prompting,
                            batch_size: int, progress: bool,
                            on_batch: Callable[[int, int], None] | None = None,
                            ) -> ActivationStats:
    """The universal set's statistics: from this model's memory, from the disk cache
    (:mod:`workbench.stats_cache`), or collected."""
    compute = lambda: collect(model, prompts, prompting=prompting,  # noqa: E731
                              batch_size=batch_size, progress=progress,
                              top_fraction=UNIVERSAL_TOP_FRACTION, on_batch=on_batch)
    if not cacheable(model):  # hooked (steered) or offloaded: neither memory nor disk
        return compute()
    key = ("universal", prompts.sha256, prompting, UNIVERSAL_TOP_FRACTION)
    if key not in model.stats_cache:
        model.stats_cache[key] = cached_stats(
            model, prompts, prompting, UNIVERSAL_TOP_FRACTION, compute)
    return model.stats_cache[key]


def _ref(prompts: PromptSet) -> dict[str, Any]:
    return {"name": prompts.name, "n": len(prompts), "sha256": prompts.sha256}
