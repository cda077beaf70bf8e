"""Behaviour filters: keep only the prompts that do (or do not) show a behaviour.

The refusal-direction work (Arditi et al. 2024) takes its means only over the harmful
prompts the model actually refuses and the harmless prompts it actually answers. This
module does the same before CNA takes its difference of means:

1. complete every prompt once (greedy, batched, formatted exactly as :func:`~workbench.discover`
   formats it: same chat template and system prompt) with :func:`workbench.generation.generate`;
2. judge each completion with a classifier, any callable ``str -> bool`` (by default the
   keyword refusal classifier :func:`workbench.evaluation.is_refusal`);
3. keep the prompts whose verdict is wanted.

Two forms:

- :func:`filter_by_behaviour` (two sets): keep the positive prompts whose completion shows
  the behaviour and the negative prompts whose completion does not.
- :func:`split_by_behaviour` (one pool): prompts that show it become the positive set, the
  others the negative set; ``balance=True`` subsamples the larger side (seeded).

Both return a :class:`FilteredPair`. Its ``record`` is JSON-ready provenance (counts kept and
dropped per side, classifier names, generation settings, the source sets' name and sha256);
``discover(..., keep_if=...)`` stores it as ``circuit.selection["filter"]``.

Example:
    >>> from workbench.filtering import classifier_name, judge, negate, not_refusal
    >>> judge(str.isupper, ["NO.", "sure"])
    [True, False]
    >>> classifier_name(negate(str.isupper)), not_refusal("I can't help with that.")
    ('not isupper', False)
    >>> pair = filter_by_behaviour(model, "jbb-harmful", "jbb-benign")  # doctest: +SKIP
    >>> pair.record["positive"]["kept"], pair.record["negative"]["dropped"]  # doctest: +SKIP
    (41, 7)
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .config import FILTER_MAX_NEW_TOKENS, DiscoverConfig
from .errors import BehaviourFilterError, InvalidArgumentError, PromptSetError
from .generation import generate
from .locks import model_lock
from .models import WorkbenchModel
from .prompts import ChatTemplateChoice, Prompting, PromptSet
from .values import check_max_new_tokens

#: A completion classifier: True when the completion shows the behaviour.
Classifier = Callable[[str], bool]

#: New tokens per completion: enough for a refusal to open the answer.
DEFAULT_FILTER_TOKENS = FILTER_MAX_NEW_TOKENS

PromptsLike = PromptSet | str | Sequence[str]


def not_refusal(text: str) -> bool:
    """True unless ``text`` opens with a refusal: the negation of ``is_refusal``.

    Example:
        >>> not_refusal("Sure! Here is a recipe."), not_refusal("I'm sorry, but I can't.")
        (True, False)
    """
    return not _keyword_refusal()(text)


def negate(classifier: Classifier) -> Classifier:
    """A classifier that says the opposite of ``classifier``, named ``"not <name>"``.

    Example:
        >>> shouting = negate(str.isupper)
        >>> shouting("calm"), shouting.__name__
        (True, 'not isupper')
    """
    _check_classifier(classifier, "classifier")
    name = classifier_name(classifier)

    def negated(text: str) -> bool:
        return not _verdict(classifier(text), name)

    negated.__name__ = negated.__qualname__ = f"not {name}"
    return negated


def classifier_name(classifier: Classifier) -> str:
    """The name recorded for a classifier: its ``__name__``, else its type's name.

    Example:
        >>> classifier_name(not_refusal), classifier_name(lambda text: True)
        ('not_refusal', '<lambda>')
    """
    name = getattr(classifier, "__name__", None)
    return str(name) if name else type(classifier).__name__


def judge(classifier: Classifier, completions: Sequence[str]) -> list[bool]:
    """The classifier's verdict on each completion, checked to be True or False.

    Raises:
        InvalidArgumentError: the classifier returned something that is not a bool.

    Example:
        >>> judge(lambda text: text.startswith("No"), ["No way.", "Yes."])
        [True, False]
    """
    _check_classifier(classifier, "classifier")
    name = classifier_name(classifier)
    return [_verdict(classifier(text), name) for text in completions]


@dataclass(frozen=True)
class FilteredPair:
    """Positive and negative prompt sets after a behaviour filter, with its provenance.

    ``record`` (JSON-ready, stored as ``circuit.selection["filter"]``) holds:

    - ``method``: ``"pair"`` (:func:`filter_by_behaviour`) or ``"pool"``
      (:func:`split_by_behaviour`); ``model``: the name of the model that completed;
    - ``classifiers``: ``{"positive": name, "negative": name}``, the test each side's kept
      prompts passed;
    - ``positive`` / ``negative``: ``{"kept", "dropped"}`` counts; for ``"pair"`` also
      ``"source"`` (``{"name", "n", "sha256"}`` of the set before filtering); for ``"pool"``
      also ``"matched"`` (pool prompts that passed), ``dropped`` then counts the prompts
      removed by balancing;
    - ``pool`` and ``balance`` (``{"seed"}`` or None), for ``"pool"`` only;
    - ``generation``: ``{"max_new_tokens", "decoding": "greedy", "prompting", "batch_size"}``.

    ``completions`` maps each source prompt to its completion (in memory only).
    """

    positive: PromptSet
    negative: PromptSet
    record: dict[str, Any]
    completions: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def provenance(self) -> dict[str, Any]:
        """A deep copy of ``record`` (what a circuit stores), safe to change.

        Example:
            >>> pair = FilteredPair(PromptSet("p", ["a"]), PromptSet("n", ["b"]),
            ...                     {"positive": {"kept": 1}})
            >>> copied = pair.provenance()
            >>> copied["positive"]["kept"] = 5
            >>> pair.record["positive"]["kept"]
            1
        """
        return copy.deepcopy(self.record)

    def summary(self) -> str:
        """One line of counts, for a status line or a log.

        Example:
            >>> FilteredPair(PromptSet("p", ["a"]), PromptSet("n", ["b"]), {
            ...     "method": "pair", "classifiers": {"positive": "x", "negative": "not x"},
            ...     "positive": {"kept": 1, "dropped": 2},
            ...     "negative": {"kept": 1, "dropped": 0}}).summary()
            'kept 1 of 3 positive prompts (x) and 1 of 1 negative prompts (not x)'
        """
        names, pos, neg = self.record["classifiers"], self.record["positive"], \
            self.record["negative"]
        if self.record["method"] == "pool":
            pool = self.record["pool"]
            balance = self.record.get("balance")
            kept = (f"; kept {pos['kept']} + {neg['kept']} (balanced, seed {balance['seed']})"
                    if balance else "")
            return (f"split {pool['n']} prompts of {pool['name']!r} by {names['positive']}: "
                    f"{pos['matched']} show it, {neg['matched']} do not{kept}")
        return (f"kept {pos['kept']} of {pos['kept'] + pos['dropped']} positive prompts "
                f"({names['positive']}) and {neg['kept']} of {neg['kept'] + neg['dropped']} "
                f"negative prompts ({names['negative']})")


def filter_by_behaviour(model: WorkbenchModel, positive: PromptsLike, negative: PromptsLike,
                        *, shows: Classifier | None = None,
                        keep_negative_if: Classifier | None = None,
                        max_new_tokens: int = DEFAULT_FILTER_TOKENS,
                        chat_template: ChatTemplateChoice = "auto",
                        system_prompt: str | None = None,
                        batch_size: int = DiscoverConfig.batch_size,
                        progress: bool = True,
                        on_progress: Callable[[str, int, int], None] | None = None,
                        ) -> FilteredPair:
    """Keep the positive prompts that show a behaviour and the negative prompts that do not.

    Every distinct prompt of both sets is completed once (greedy, in batches of
    ``batch_size``), formatted as :func:`~workbench.discover` formats it.

    Args:
        positive, negative: PromptSets, bundled names, file paths, or lists of strings.
        shows: classifier of a completion, True when it shows the behaviour; default the
            keyword refusal classifier :func:`workbench.evaluation.is_refusal`.
        keep_negative_if: the test a negative prompt's completion must pass to be kept;
            default ``negate(shows)`` (it does not show the behaviour).
        max_new_tokens: length of each completion.
        chat_template, system_prompt: prompt formatting, as for ``discover``.
        on_progress: called after every batch with ``("filter", prompts done, total)``.

    Raises:
        BehaviourFilterError: a side has no prompt left; the message says how many were
            dropped and what to try.

    Example:
        >>> pair = filter_by_behaviour(model, "jbb-harmful", "jbb-benign")  # doctest: +SKIP
        >>> circuit = discover(model, pair.positive, pair.negative, keep_if=pair)  # doctest: +SKIP
    """
    positive = PromptSet.resolve(positive, name="positive")
    negative = PromptSet.resolve(negative, name="negative")
    positive.require_nonempty("positive")
    negative.require_nonempty("negative")
    keep_positive = _keyword_refusal() if shows is None else shows
    _check_classifier(keep_positive, "shows")
    keep_negative = negate(keep_positive) if keep_negative_if is None else keep_negative_if
    _check_classifier(keep_negative, "keep_negative_if")
    prompting = model.prompting(chat_template, system_prompt)
    completions = _complete(model, positive.prompts + negative.prompts, prompting,
                            max_new_tokens, batch_size, progress, on_progress)
    sides, record_sides, empty = {}, {}, []
    for side, source, keep in (("positive", positive, keep_positive),
                               ("negative", negative, keep_negative)):
        name = classifier_name(keep)
        flags = judge(keep, [completions[p] for p in source.prompts])
        kept = [p for p, flag in zip(source.prompts, flags) if flag]
        sides[side] = PromptSet(f"{source.name}[{name}]", kept,
                                {"filtered_from": source.name, "classifier": name})
        record_sides[side] = {"source": _ref(source), "kept": len(kept),
                              "dropped": len(source) - len(kept)}
        if not kept:
            empty.append(f"{name} held for none of the {len(source)} completions of the "
                         f"{side} set {source.name!r}, so all {len(source)} were dropped")
    if empty:
        raise BehaviourFilterError(
            f"the behaviour filter left nothing to contrast: {'; '.join(empty)} (greedy, "
            f"{max_new_tokens} new tokens). Try prompts that elicit the behaviour, longer "
            "completions (max_new_tokens; CLI: --filter-tokens), a system prompt, or a model "
            "that shows the behaviour; or go on without the filter"
        )
    record = {
        "method": "pair",
        "model": model.name,
        "classifiers": {"positive": classifier_name(keep_positive),
                        "negative": classifier_name(keep_negative)},
        **record_sides,
        "generation": _generation(max_new_tokens, prompting, batch_size),
    }
    return FilteredPair(sides["positive"], sides["negative"], record, completions)


def split_by_behaviour(model: WorkbenchModel, pool: PromptsLike, *,
                       shows: Classifier | None = None, balance: bool = True, seed: int = 0,
                       max_new_tokens: int = DEFAULT_FILTER_TOKENS,
                       chat_template: ChatTemplateChoice = "auto",
                       system_prompt: str | None = None,
                       batch_size: int = DiscoverConfig.batch_size,
                       progress: bool = True,
                       on_progress: Callable[[str, int, int], None] | None = None,
                       ) -> FilteredPair:
    """Split one pool of prompts by the model's behaviour: shows it (positive) or not.

    With ``balance=True`` the larger side is cut to the size of the smaller by a seeded
    random subsample (:meth:`PromptSet.sample`: the same ``seed`` keeps the same prompts,
    in pool order). Other arguments as for :func:`filter_by_behaviour`.

    Raises:
        BehaviourFilterError: every completion showed the behaviour, or none did.

    Example:
        >>> pair = split_by_behaviour(model, "advbench", seed=0)             # doctest: +SKIP
        >>> circuit = discover(model, pair.positive, pair.negative, keep_if=pair)  # doctest: +SKIP
    """
    pool = PromptSet.resolve(pool, name="pool")
    pool.require_nonempty("pool")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidArgumentError(f"seed must be an integer, not {seed!r}")
    shows = _keyword_refusal() if shows is None else shows
    _check_classifier(shows, "shows")
    name = classifier_name(shows)
    prompting = model.prompting(chat_template, system_prompt)
    completions = _complete(model, pool.prompts, prompting, max_new_tokens, batch_size,
                            progress, on_progress)
    flags = judge(shows, [completions[p] for p in pool.prompts])
    matched = {"positive": [p for p, flag in zip(pool.prompts, flags) if flag],
               "negative": [p for p, flag in zip(pool.prompts, flags) if not flag]}
    labels = {"positive": name, "negative": f"not {name}"}
    for side, other in (("positive", "negative"), ("negative", "positive")):
        if not matched[side]:
            raise BehaviourFilterError(
                f"{name} held for {len(matched['positive'])} of the {len(pool)} completions "
                f"of the pool {pool.name!r} (greedy, {max_new_tokens} new tokens), so the "
                f"{side} side is empty and all {len(pool)} prompts landed on the {other} "
                "side. Try a larger or more varied pool, longer completions "
                "(max_new_tokens), a system prompt, or a model that shows the behaviour "
                "only sometimes"
            )
    sides = {side: PromptSet(f"{pool.name}[{labels[side]}]", matched[side],
                             {"filtered_from": pool.name, "classifier": labels[side]})
             for side in matched}
    if balance:
        n = min(len(s) for s in sides.values())
        sides = {side: s.sample(n, seed=seed, name=s.name) if len(s) > n else s
                 for side, s in sides.items()}
    record = {
        "method": "pool",
        "model": model.name,
        "classifiers": labels,
        "pool": _ref(pool),
        **{side: {"matched": len(matched[side]), "kept": len(sides[side]),
                  "dropped": len(matched[side]) - len(sides[side])} for side in sides},
        "balance": {"seed": seed} if balance else None,
        "generation": _generation(max_new_tokens, prompting, batch_size),
    }
    return FilteredPair(sides["positive"], sides["negative"], record, completions)


def apply_keep_if(model: WorkbenchModel, positive: PromptSet, negative: PromptSet,
                  keep_if: tuple[Classifier, Classifier] | FilteredPair, *,
                  chat_template: ChatTemplateChoice = "auto",
                  system_prompt: str | None = None, batch_size: int = DiscoverConfig.batch_size,
                  progress: bool = True, max_imbalance: float | None = DiscoverConfig.max_imbalance,
                  on_progress: Callable[[str, int, int], None] | None = None,
                  ) -> FilteredPair:
    """The filtered sets for ``discover(..., keep_if=...)``.

    ``keep_if`` is a pair of classifiers ``(keep_positive_if, keep_negative_if)``, applied
    to completions of :data:`DEFAULT_FILTER_TOKENS` tokens, or a :class:`FilteredPair`
    made earlier from these sets (then nothing is generated). The kept sets must still be
    balanced within ``max_imbalance`` (None: any ratio).

    Example:
        >>> from workbench.evaluation import is_refusal
        >>> keep_if = (is_refusal, not_refusal)
        >>> pair = apply_keep_if(model, harmful, benign, keep_if)  # doctest: +SKIP
    """
    if isinstance(keep_if, FilteredPair):
        _check_sources(keep_if, positive, negative)
        pair = keep_if
    elif isinstance(keep_if, (tuple, list)) and len(keep_if) == 2 \
            and all(callable(test) for test in keep_if):
        pair = filter_by_behaviour(model, positive, negative, shows=keep_if[0],
                                   keep_negative_if=keep_if[1], chat_template=chat_template,
                                   system_prompt=system_prompt, batch_size=batch_size,
                                   progress=progress, on_progress=on_progress)
    else:
        raise InvalidArgumentError(
            "keep_if must be a pair of classifiers (keep_positive_if, keep_negative_if), "
            "e.g. (is_refusal, not_refusal), or a FilteredPair from filter_by_behaviour / "
            f"split_by_behaviour; not {keep_if!r}"
        )
    kept_pos, kept_neg = len(pair.positive), len(pair.negative)
    if not kept_pos or not kept_neg:
        raise BehaviourFilterError(f"keep_if left an empty set ({pair.summary()}); filter "
                                   "other prompts, or go on without keep_if")
    big, small = max(kept_pos, kept_neg), min(kept_pos, kept_neg)
    if max_imbalance is not None and big / small > max_imbalance:
        raise PromptSetError(
            f"after the behaviour filter the sets are lopsided ({pair.summary()}; "
            f"{kept_pos} vs {kept_neg}, more than {max_imbalance:g}x): the smaller set's "
            "mean is much noisier. Add prompts to the smaller side, use split_by_behaviour "
            "with balance=True, or pass max_imbalance=None (CLI: --allow-imbalance)"
        )
    return pair


# -- helpers -------------------------------------------------------------------------


def _keyword_refusal() -> Classifier:
    """The keyword refusal classifier, imported on first use (workbench.evaluation is big)."""
    from .evaluation.refusal import is_refusal

    return is_refusal


def _check_classifier(classifier: Any, what: str) -> None:
    if not callable(classifier):
        raise InvalidArgumentError(
            f"{what} must be a classifier, a callable that takes a completion (str) and "
            f"returns True or False, such as is_refusal; not {classifier!r}"
        )


def _verdict(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidArgumentError(
            f"the classifier {name} returned {value!r} ({type(value).__name__}) for a "
            "completion; a classifier must return True or False"
        )
    return bool(value)


def _complete(model: WorkbenchModel, prompts: Sequence[str], prompting: Prompting,
              max_new_tokens: int, batch_size: int, progress: bool,
              on_progress: Callable[[str, int, int], None] | None) -> dict[str, str]:
    """Greedy completion of each distinct prompt: prompt -> completion.

    Prompts go to :func:`~workbench.generation.generate` in the batches it would form itself
    (sorted by length), one call per batch, so that progress can be reported.
    """
    check_max_new_tokens(max_new_tokens)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive integer, not {batch_size!r}")
    unique = sorted(dict.fromkeys(prompts), key=len)  # stable: ties keep first-seen order
    batches = [unique[i:i + batch_size] for i in range(0, len(unique), batch_size)]
    completions: dict[str, str] = {}
    with model_lock(model):
        for batch in tqdm(batches, disable=not progress, desc="filtering", unit="batch",
                          leave=False):
            texts = generate(model, batch, max_new_tokens=max_new_tokens,
                             chat_template=prompting.chat_template,
                             system_prompt=prompting.system_prompt, batch_size=len(batch))
            completions.update(zip(batch, texts))
            if on_progress is not None:
                on_progress("filter", len(completions), len(unique))
    return completions


def _check_sources(pair: FilteredPair, positive: PromptSet, negative: PromptSet) -> None:
    """Refuse a FilteredPair made from other prompts than the sets given to discover."""
    for side, given in (("positive", positive), ("negative", negative)):
        filtered = getattr(pair, side)
        source = pair.record.get(side, {}).get("source", {})
        if given.sha256 not in (filtered.sha256, source.get("sha256")):
            made_from = source.get("name") or pair.record.get("pool", {}).get("name")
            raise InvalidArgumentError(
                f"keep_if is a FilteredPair made from {made_from!r}, but the {side} set given "
                f"({given.name!r}, {len(given)} prompts) is neither its source nor its "
                f"filtered {side} set; pass pair.{side}, or filter these prompts again"
            )


def _generation(max_new_tokens: int, prompting: Prompting, batch_size: int) -> dict[str, Any]:
    return {"max_new_tokens": max_new_tokens, "decoding": "greedy",
            "prompting": prompting.to_dict(), "batch_size": batch_size}


def _ref(prompts: PromptSet) -> dict[str, Any]:
    return {"name": prompts.name, "n": len(prompts), "sha256": prompts.sha256}
