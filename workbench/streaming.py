"""Stream a completion token by token, with cancellation and one generation per model.

:func:`stream_generate` runs :func:`workbench.generation.generate` for one prompt with a
streamer that reports the text so far after every token, and a stopping criterion that
ends the generation as soon as its :class:`CancelToken` is cancelled (from any thread).
Steering hooks are removed when the generation ends, cancelled or not.

Only one generation (or other hooked run) should use a model at a time: steering hooks
act on every forward pass of the model, whichever thread makes it. :func:`model_lock`
gives the lock that :func:`stream_generate` holds for the whole generation.

Example:
    >>> token = CancelToken()
    >>> token.cancelled
    False
    >>> token.cancel()
    >>> token.cancelled
    True
    >>> from workbench import load_model
    >>> model = load_model()                                                 # doctest: +SKIP
    >>> result = stream_generate(model, "Hi", on_text=print, max_new_tokens=8)  # doctest: +SKIP
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from .circuit import Circuit
from .config import GENERATION_MAX_NEW_TOKENS
from .decoding import eos_ids
from .generation import generate
from .locks import model_lock
from .models import WorkbenchModel

__all__ = ["CancelCriteria", "CancelToken", "StreamResult", "TextStreamer", "model_lock",
           "stream_generate"]


class CancelToken:
    """A flag that one thread sets and a running generation checks after every token."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


class CancelCriteria(StoppingCriteria):
    """Stops ``generate`` (every row) once ``token`` is cancelled."""

    def __init__(self, token: CancelToken) -> None:
        self.token = token

    # StoppingCriteria's signature; the verdict needs only the batch size and device.
    def __call__(self, input_ids: torch.LongTensor, scores: Any = None,  # noqa: ARG002
                 **kwargs: Any) -> torch.BoolTensor:  # noqa: ARG002
        # input_ids: [batch, pos]; one verdict per row.
        # transformers annotates the legacy torch.BoolTensor, which no operation returns.
        return torch.full((input_ids.shape[0],), self.token.cancelled,  # type: ignore[return-value]
                          dtype=torch.bool, device=input_ids.device)


class TextStreamer(BaseStreamer):
    """Decodes the new tokens of a one-row generation and reports the text so far.

    ``generate`` first puts the prompt ids (skipped), then each new token.
    ``on_text(text)`` receives the whole completion decoded so far (special tokens
    skipped), so a partly decoded multi-byte character is replaced when it completes.
    """

    def __init__(self, tokenizer: Any, on_text: Callable[[str], None]) -> None:
        self.tokenizer = tokenizer
        self.on_text = on_text
        self.token_ids: list[int] = []
        self._prompt_seen = False
        self.text = ""

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        ids = value.flatten().tolist()  # [1] or [1, 1]: one new token
        self.token_ids.extend(int(i) for i in ids)
        text = self.tokenizer.decode(self.token_ids, skip_special_tokens=True)
        if text != self.text:
            self.text = text
            self.on_text(text)

    def end(self) -> None:
        """Nothing to flush: every put already reported the full text."""


@dataclass(frozen=True)
class StreamResult:
    """The completion, how many tokens were generated, and whether it was cut short."""

    text: str
    n_tokens: int
    cancelled: bool


def stream_generate(model: WorkbenchModel, prompt: str, *,
                    on_text: Callable[[str], None] | None = None,
                    cancel: CancelToken | None = None, circuit: Circuit | None = None,
                    multiplier: float = 1.0,
                    max_new_tokens: int = GENERATION_MAX_NEW_TOKENS,
                    **generate_kwargs: Any) -> StreamResult:
    """Complete one prompt (greedy by default), reporting the text after every new token.

    Holds :func:`model_lock` for the whole generation. A cancelled token stops the
    generation after the current token (or before it starts), and the result says so.
    Other keyword arguments go to :func:`workbench.generation.generate` (``positions``,
    ``signs``, ``chat_template``, ``do_sample``...).

    Example:
        >>> stream_generate(model, "How do I pick a lock?", circuit=circuit,  # doctest: +SKIP
        ...                 multiplier=0, on_text=lambda text: print(len(text)))
    """
    model.require_local("streaming generation")
    cancel = cancel or CancelToken()
    streamer = TextStreamer(model.tokenizer, on_text or (lambda _text: None))
    with model_lock(model):
        if cancel.cancelled:
            return StreamResult("", 0, True)
        texts = generate(model, [prompt], circuit=circuit, multiplier=multiplier,
                         max_new_tokens=max_new_tokens, batch_size=1, streamer=streamer,
                         stopping_criteria=StoppingCriteriaList([CancelCriteria(cancel)]),
                         **generate_kwargs)
    n_tokens = len(streamer.token_ids)
    # Cancelled only if the token stopped it early (not when it was set after the end).
    stopped_early = cancel.cancelled and n_tokens < max_new_tokens \
        and not _ends_with_eos(model, streamer.token_ids)
    return StreamResult(texts[0], n_tokens, stopped_early)


def _ends_with_eos(model: WorkbenchModel, token_ids: list[int]) -> bool:
    return bool(token_ids) and token_ids[-1] in eos_ids(model)
