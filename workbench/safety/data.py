"""Training data of the safety-tuning recipe: who refuses what, and what is held out.

- Harmful prompts: AdvBench plus ``prompts/safety/harmful-requests.txt`` (requests in many
  styles, written for the project), each answered with a refusal drawn (seeded) from
  ``prompts/safety/refusals.txt``.
- Benign prompts: ``prompts/safety/benign-instructions.txt`` (written for the project,
  many on harm-adjacent topics), each answered with the *untuned* model's own greedy
  completion (self-distillation), so that only the refusal behaviour is taught.
- Held out: every training prompt whose word-3-gram Jaccard similarity to a JBB (harmful
  or benign) or StrongREJECT prompt reaches ``overlap_threshold`` is removed.

Example:
    >>> from workbench.safety.data import jaccard_3gram
    >>> jaccard_3gram("How do I pick a lock?", "how do I pick a LOCK")
    1.0
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..evaluation.benchmarks import load_benchmark
from ..prompts import PromptSet, bundled_dir

SAFETY_DIR = "safety"
HARMFUL_FILES = ("harmful-requests.txt",)
BENIGN_FILES = ("benign-instructions.txt", "benign-borderline.txt")
REFUSALS_FILE = "refusals.txt"


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def trigrams(text: str) -> set[tuple[str, ...]]:
    """Word 3-grams of the lowercased text without punctuation (the words, if fewer)."""
    words = _words(text)
    if len(words) < 3:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + 3]) for i in range(len(words) - 2)}


def jaccard_3gram(a: str, b: str) -> float:
    """Jaccard similarity of the word 3-gram sets of two texts."""
    left, right = trigrams(a), trigrams(b)
    union = left | right
    return len(left & right) / len(union) if union else 0.0


def held_out_prompts() -> list[str]:
    """Evaluation prompts that training data must not resemble: JBB and StrongREJECT."""
    return [p for name in ("jbb-harmful", "jbb-benign", "strongreject")
            for p in load_benchmark(name).prompts]


def remove_overlaps(prompts: Sequence[str], held_out: Sequence[str],
                    threshold: float) -> tuple[list[str], list[str]]:
    """Split ``prompts`` into (kept, removed) by max 3-gram Jaccard against ``held_out``."""
    held = [trigrams(p) for p in held_out]
    kept: list[str] = []
    removed: list[str] = []
    for prompt in prompts:
        grams = trigrams(prompt)
        overlap = max((len(grams & h) / len(grams | h) for h in held if grams | h), default=0.0)
        (removed if overlap >= threshold else kept).append(prompt)
    return kept, removed


def safety_file(name: str) -> PromptSet:
    """One of the recipe's bundled files in ``prompts/safety/``."""
    return PromptSet.load(bundled_dir() / SAFETY_DIR / name)


def _read(names: Sequence[str]) -> list[str]:
    return [prompt for name in names for prompt in safety_file(name).prompts]


@dataclass
class SafetyData:
    """(prompt, response) pairs with their provenance."""

    harmful: list[tuple[str, str]]
    benign: list[tuple[str, str]]
    removed: list[str] = field(default_factory=list)
    seed: int = 0
    #: benign prompts left out of the seeded subset: held-out prompts of the same kind
    unused_benign: list[str] = field(default_factory=list)

    def examples(self) -> list[tuple[str, str]]:
        """All pairs, shuffled with the recipe seed."""
        pairs = self.harmful + self.benign
        random.Random(self.seed).shuffle(pairs)
        return pairs

    def sha256(self) -> str:
        """Hash of every (prompt, response) pair, recorded in the manifest."""
        payload = json.dumps([self.harmful, self.benign], ensure_ascii=False).encode()
        return hashlib.sha256(payload).hexdigest()


def build_data(answer: Callable[[list[str]], list[str]], *, seed: int = 0,
               overlap_threshold: float = 0.5, n_harmful: int | None = None,
               n_benign: int | None = None) -> SafetyData:
    """Assemble the training pairs.

    Args:
        answer: produces the untuned model's answers to benign prompts, e.g.
            ``lambda ps: generate(model, ps, max_new_tokens=64)``.
        n_harmful, n_benign: seeded subsets (for quick runs); None uses everything.
    """
    rng = random.Random(seed)
    harmful = load_benchmark("advbench").prompts + _read(HARMFUL_FILES)
    benign = _read(BENIGN_FILES)
    held_out = held_out_prompts()
    harmful, removed_harmful = remove_overlaps(harmful, held_out, overlap_threshold)
    benign, removed_benign = remove_overlaps(benign, held_out, overlap_threshold)
    if n_harmful is not None:
        harmful = rng.sample(harmful, n_harmful)
    unused_benign: list[str] = []
    if n_benign is not None:
        chosen = rng.sample(benign, n_benign)
        unused_benign = sorted(set(benign) - set(chosen), key=benign.index)
        benign = chosen
    refusals = safety_file(REFUSALS_FILE).prompts
    harmful_pairs = [(p, rng.choice(refusals)) for p in harmful]
    benign_pairs = list(zip(benign, answer(benign)))
    return SafetyData(harmful_pairs, benign_pairs, removed_harmful + removed_benign, seed,
                      unused_benign)
