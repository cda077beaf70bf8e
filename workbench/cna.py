"""Contrastive Neuron Attribution: find the neurons that best separate two prompt sets.

1. Record every MLP neuron's down-projection input at the last prompt token.
2. ``delta[l, j] = mean_positive[l, j] - mean_negative[l, j]`` (float64).
3. Exclude "universal" neurons: those among the top 0.1% by ``|activation|`` on at least
   ``universal_threshold`` of a diverse prompt set.
4. Rank all remaining neurons of all layers together by ``|delta|`` (ties by layer, then
   index) and keep ``top_k = round(fraction * n_layers * d_mlp)`` of them, sign kept.

Example:
    >>> from workbench import load_model, discover
    >>> model = load_model()                                              # doctest: +SKIP
    >>> circuit = discover(model, "qualitative-harmful", "qualitative-benign")  # doctest: +SKIP
    >>> len(circuit)                                                      # doctest: +SKIP
    46
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from .activations import ActivationStats, collect
from .circuit import Circuit, Neuron
from .config import DEFAULT_FRACTION, DiscoverConfig
from .errors import InvalidArgumentError, PromptSetError
from .filtering import FilteredPair, apply_keep_if
from .models import WorkbenchModel
from .prompts import Prompting, PromptSet

UNIVERSAL_TOP_FRACTION = 0.001

PromptsLike = PromptSet | str | Sequence[str]


@dataclass
class Contrast:
    """The statistics behind a circuit, kept in memory for plots (not serialised).

    ``delta``, ``universal`` are ``[n_layers, d_mlp]`` (float64 and bool).
    """

    positive: ActivationStats
    negative: ActivationStats
    delta: torch.Tensor
    universal: torch.Tensor
    universal_stats: ActivationStats | None = None


def circuit_size(n_layers: int, d_mlp: int, fraction: float | None = DEFAULT_FRACTION,
                 top_k: int | None = None) -> int:
    """Number of neurons to keep: ``top_k`` if given, else ``round(fraction * n_layers * d_mlp)``.

    Example:
        >>> circuit_size(30, 1536, 0.001)
        46
    """
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise InvalidArgumentError(f"top_k must be a positive integer, not {top_k!r}")
        return top_k
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not 0 < fraction <= 1:
        raise InvalidArgumentError(f"fraction must be a number in (0, 1], not {fraction!r}")
    return max(1, round(fraction * n_layers * d_mlp))


def select_top(delta: torch.Tensor, k: int, excluded: torch.Tensor | None = None,
               ) -> list[Neuron]:
    """The ``k`` neurons of largest ``|delta|``; ties broken by (layer, index).

    Args:
        delta: ``[n_layers, d_mlp]`` signed differences.
        excluded: optional bool ``[n_layers, d_mlp]``; True neurons are never chosen.

    Example:
        >>> d = torch.tensor([[0.0, -3.0], [2.0, 3.0]])
        >>> [(n.layer, n.index, n.score) for n in select_top(d, 2)]
        [(0, 1, -3.0), (1, 1, 3.0)]
    """
    magnitude = delta.abs().to(torch.float64).flatten()  # [n_layers * d_mlp]
    candidates = torch.arange(magnitude.numel())
    if excluded is not None:
        candidates = candidates[~excluded.flatten()]
    # Stable sort on the flat (layer, index) order keeps ties in (layer, index) order.
    order = torch.sort(-magnitude[candidates], stable=True).indices[:k]
    chosen = candidates[order]
    d_mlp = delta.shape[1]
    return [Neuron(int(i) // d_mlp, int(i) % d_mlp, float(delta.flatten()[i])) for i in chosen]


def universal_neurons(stats: ActivationStats,
                      threshold: float = DiscoverConfig.universal_threshold) -> torch.Tensor:
    """Bool ``[n_layers, d_mlp]``: the universal neurons of ``stats``.

    A neuron is universal when it is top by ``|activation|`` on ``>= threshold`` of prompts.
    """
    if not 0 < threshold <= 1:
        raise InvalidArgumentError(f"universal_threshold must be in (0, 1], not {threshold!r}")
    return stats.top_fraction >= threshold


def check_balance(positive: PromptSet, negative: PromptSet, max_ratio: float | None) -> None:
    """Raise :class:`PromptSetError` for an empty set, or sizes differing by > ``max_ratio``.

    ``max_ratio=None`` only checks that neither set is empty.
    """
    positive.require_nonempty("positive")
    negative.require_nonempty("negative")
    big, small = max(len(positive), len(negative)), min(len(positive), len(negative))
    if max_ratio is not None and big / small > max_ratio:
        raise PromptSetError(
            f"the prompt sets are lopsided ({len(positive)} positive vs {len(negative)} "
            f"negative, more than {max_ratio:g}x): the smaller set's mean is much noisier. "
            "Balance them, or pass max_imbalance=None (CLI: --allow-imbalance) to go on anyway"
        )


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
    key = ("universal", prompts.sha256, prompting, UNIVERSAL_TOP_FRACTION)
    if key not in model.stats_cache:
        model.stats_cache[key] = collect(model, prompts, prompting=prompting,
                                         batch_size=batch_size, progress=progress,
                                         top_fraction=UNIVERSAL_TOP_FRACTION, on_batch=on_batch)
    return model.stats_cache[key]


def _normalise_layers(layers: Sequence[int], n_layers: int) -> list[int]:
    result = set()
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int) \
                or not -n_layers <= layer < n_layers:
            raise InvalidArgumentError(f"exclude_layers: {layer!r} is not a layer of this "
                             f"{n_layers}-layer model")
        result.add(layer % n_layers)
    return sorted(result)


def _ref(prompts: PromptSet) -> dict[str, Any]:
    return {"name": prompts.name, "n": len(prompts), "sha256": prompts.sha256}
