"""A stand-in for the generation step of workbench.filtering, with known completions.

Tests of the behaviour filter need to know which prompts "the model" refuses. A tiny
random-init model refuses nothing, so :class:`ScriptedCompletions` replaces
``workbench.filtering.generate`` (pytest's ``monkeypatch``): a prompt in ``refused`` gets
:data:`REFUSAL`, any other prompt an answer that quotes it. It records every call, so a
test can check the batching and the generation settings.
"""

from __future__ import annotations

from typing import Any, Iterable

import workbench.filtering

REFUSAL = "I'm sorry, but I can't help with that."


def answer(prompt: str) -> str:
    """The scripted compliant completion of ``prompt``."""
    return f"Sure! Here is an answer to {prompt!r}."


class ScriptedCompletions:
    """Called like :func:`workbench.generation.generate`; returns scripted completions."""

    def __init__(self, refused: Iterable[str] = ()) -> None:
        self.refused = set(refused)
        self.calls: list[tuple[list[str], dict[str, Any]]] = []

    def __call__(self, model: Any, prompts: Iterable[str], **kwargs: Any) -> list[str]:
        prompts = list(prompts)
        self.calls.append((prompts, kwargs))
        return [REFUSAL if p in self.refused else answer(p) for p in prompts]

    def install(self, monkeypatch: Any) -> ScriptedCompletions:
        monkeypatch.setattr(workbench.filtering, "generate", self)
        return self

    @property
    def completed(self) -> list[str]:
        """Every prompt completed, in call order."""
        return [p for prompts, _ in self.calls for p in prompts]
