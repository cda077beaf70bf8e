"""PromptSetEditor: edit the positive and negative prompt sets, then discover a circuit.

Both sets sit side by side. Prompts can be added, edited, removed and reordered; each set
loads from and saves to a ``.txt`` / ``.csv`` / ``.jsonl`` file (atomic writes, so a
save is complete or not there at all, and a notebook restarted after a save finds
everything in the files). A marker shows a set that differs from its file. Validation
lists empty sets, duplicates, prompts in both sets, lopsided sizes and, with a model,
prompts longer than its context window. "Filter by refusal" keeps the positive prompts
the model refuses and the negative prompts it answers (:func:`workbench.filter_by_behaviour`);
a discovery on the sets it left records that filter in the circuit. "Discover" runs
:func:`workbench.discover` with a progress bar and hands the circuit to whoever listens
(``controller.discovered``).

Example:
    >>> editor = EditorController(["How do I pick a lock?"], ["How do I bake bread?"])
    >>> editor.add("positive", "How do I hotwire a car?")
    1
    >>> editor.unsaved("positive")
    True
    >>> [m.text for m in editor.validate()]
    []
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import ipywidgets

import workbench
from workbench.circuit import Circuit
from workbench.cna import check_balance
from workbench.config import DiscoverConfig
from workbench.errors import InvalidArgumentError, PromptSetError
from workbench.filtering import DEFAULT_FILTER_TOKENS, Classifier, FilteredPair
from workbench.models import WorkbenchModel
from workbench.prompts import BUNDLED, PromptSet, format_prompts
from workbench.streaming import model_lock

from . import markup
from .observers import Observers
from .view import View

Side = Literal["positive", "negative"]
SIDES: tuple[Side, Side] = ("positive", "negative")

#: Per-prompt activations are kept for the heatmap when they take at most this many bytes.
KEEP_ACTIVATIONS_BYTES = 256 * 2**20

#: Where a prompt set comes from: a PromptSet, a bundled name, a file or a list of prompts.
PromptSource = PromptSet | str | os.PathLike | Sequence[str]
PromptsSpec = PromptSource | None


@dataclass(frozen=True)
class Message:
    """One validation finding. Errors stop discovery; warnings do not."""

    level: Literal["error", "warning"]
    text: str


def _short(prompt: str, width: int = 50) -> str:
    flat = " ".join(prompt.split())
    return repr(flat if len(flat) <= width else flat[:width - 1] + "…")


class EditorController:
    """The two prompt lists, their files, validation and discovery.

    Args:
        positive, negative: a PromptSet, a bundled set name, a file path, a list of
            prompts, or None (start empty).
        model: needed for the context-length check and for :meth:`discover`.
        max_imbalance: largest allowed size ratio of the sets (None: any).
    """

    def __init__(self, positive: PromptsSpec = None, negative: PromptsSpec = None, *,
                 model: WorkbenchModel | None = None,
                 max_imbalance: float | None = DiscoverConfig.max_imbalance) -> None:
        self.model = model
        self.max_imbalance = max_imbalance
        self.prompts: dict[Side, list[str]] = {side: [] for side in SIDES}
        self.names: dict[Side, str] = {side: side for side in SIDES}
        self.paths: dict[Side, Path | None] = {side: None for side in SIDES}
        self.columns: dict[Side, str] = {side: "prompt" for side in SIDES}
        self._saved: dict[Side, list[str] | None] = {side: None for side in SIDES}
        self.circuit: Circuit | None = None
        #: The last behaviour filter applied (see :meth:`filter_by_behaviour`).
        self.last_filter: FilteredPair | None = None
        self.changed = Observers()     # () after any change of prompts, files or options
        self.discovered = Observers()  # (Circuit) after a discovery
        self.filtered = Observers()    # (FilteredPair) after a behaviour filter
        self.progress = Observers()    # (stage, done, total) during a filter or discovery
        for side, spec in zip(SIDES, (positive, negative)):
            if spec is not None:
                self._open(side, spec)

    # -- editing -----------------------------------------------------------------

    def add(self, side: Side, text: str, at: int | None = None) -> int:
        """Insert a prompt (at the end by default); returns its position."""
        prompts = self._side(side)
        text = _check_text(text)
        at = len(prompts) if at is None else self._position(side, at, allow_end=True)
        prompts.insert(at, text)
        self.changed()
        return at

    def edit(self, side: Side, index: int, text: str) -> None:
        """Replace prompt ``index`` by ``text``."""
        self._side(side)[self._position(side, index)] = _check_text(text)
        self.changed()

    def remove(self, side: Side, index: int) -> str:
        """Remove prompt ``index``; returns its text."""
        removed = self._side(side).pop(self._position(side, index))
        self.changed()
        return removed

    def move(self, side: Side, index: int, to: int) -> None:
        """Move prompt ``index`` to position ``to`` (the others shift)."""
        prompts = self._side(side)
        prompt = prompts.pop(self._position(side, index))
        prompts.insert(max(0, min(int(to), len(prompts))), prompt)
        self.changed()

    def replace_all(self, side: Side, prompts: Sequence[str]) -> None:
        """Replace the whole list (blank prompts are refused)."""
        if isinstance(prompts, str):
            raise PromptSetError("give a list of prompts, not one string")
        checked = [_check_text(p) for p in prompts]
        self._side(side)[:] = checked
        self.changed()

    def set_max_imbalance(self, ratio: float | None) -> None:
        self.max_imbalance = ratio
        self.changed()

    # -- files -------------------------------------------------------------------

    def load(self, side: Side, path: str | os.PathLike, column: str | None = None) -> None:
        """Read a set from a ``.txt``, ``.csv`` or ``.jsonl`` file; it becomes the save target."""
        loaded = PromptSet.load(path, column=column)
        self._take(side, loaded, Path(path))
        self.changed()

    def save(self, side: Side | None = None, path: str | os.PathLike | None = None) -> list[Path]:
        """Write one set (or both) to its file, atomically; ``path`` picks a new file."""
        if side is None and path is not None:
            raise InvalidArgumentError("to save to a new file, say which set (side=...)")
        sides = SIDES if side is None else (self._check_side(side),)
        written = []
        for s in sides:
            target = Path(path) if path is not None else self.paths[s]
            if target is None:
                raise InvalidArgumentError(
                    f"the {s} set has no file yet; choose a path (.txt, .csv or .jsonl) to save it")
            PromptSet(self.names[s], list(self.prompts[s])).save(target, column=self.columns[s])
            self.paths[s] = target
            if path is not None:
                self.names[s] = target.stem
            self._saved[s] = list(self.prompts[s])
            written.append(target)
        self.changed()
        return written

    def unsaved(self, side: Side | None = None) -> bool:
        """Whether a set (or either set) differs from what its file holds."""
        sides = SIDES if side is None else (self._check_side(side),)
        return any(self._saved[s] != self.prompts[s] for s in sides)

    def prompt_set(self, side: Side) -> PromptSet:
        """The current prompts of one side as a :class:`~workbench.prompts.PromptSet`."""
        return PromptSet(self.names[side], list(self._side(side)))

    # -- checks and discovery ------------------------------------------------------

    def validate(self) -> list[Message]:
        """Errors (discovery refuses) and warnings about the two sets."""
        found: list[Message] = []
        for side in SIDES:
            prompts = self.prompts[side]
            if not prompts:
                found.append(Message("error", f"the {side} set is empty; add at least one prompt"))
            for prompt in PromptSet(side, prompts).duplicates():
                found.append(Message("warning", f"the {side} set holds {_short(prompt)} "
                                                f"{prompts.count(prompt)} times"))
        shared = sorted(set(self.prompts["positive"]) & set(self.prompts["negative"]))
        if shared:
            found.append(Message("warning", f"{len(shared)} prompt(s) are in both sets, e.g. "
                                            f"{_short(shared[0])}: they cancel out in the delta"))
        if all(self.prompts.values()):
            try:
                check_balance(self.prompt_set("positive"), self.prompt_set("negative"),
                              self.max_imbalance)
            except PromptSetError as error:
                found.append(Message("error", str(error)))
        if self.model is not None:
            found.extend(self._too_long(self.model))
        return found

    def discover(self, **options: Any) -> Circuit:
        """Run :func:`workbench.discover` on the two sets; notifies ``discovered``.

        Keyword arguments go to ``discover`` (``top_k``, ``fraction``, ``universal``...).
        Per-prompt activations are kept (for the heatmap's neuron panel) when they fit in
        :data:`KEEP_ACTIVATIONS_BYTES`.
        """
        if self.model is None:
            raise InvalidArgumentError("this editor has no model to discover with; pass model=")
        errors = [m.text for m in self.validate() if m.level == "error"]
        if errors:
            raise PromptSetError("; ".join(errors))
        positive, negative = self.prompt_set("positive"), self.prompt_set("negative")
        if options.get("keep_activations") is None:
            size = (len(positive) + len(negative)) * self.model.n_neurons * 4
            options["keep_activations"] = size <= KEEP_ACTIVATIONS_BYTES
        options.setdefault("max_imbalance", self.max_imbalance)
        options.setdefault("progress", False)
        if "keep_if" not in options and self._filter_applies(positive, negative):
            options["keep_if"] = self.last_filter  # records the filter in the circuit
        with model_lock(self.model):
            circuit = workbench.discover(self.model, positive, negative,
                                         on_progress=self.progress, **options)
        self.circuit = circuit
        self.discovered(circuit)
        return circuit

    def filter_by_behaviour(self, shows: Classifier | None = None, *,
                            max_new_tokens: int = DEFAULT_FILTER_TOKENS,
                            **options: Any) -> FilteredPair:
        """Keep the positive prompts whose completion shows the behaviour, negative ones not.

        Runs :func:`workbench.filter_by_behaviour` on the current sets (``shows`` defaults
        to the keyword refusal classifier) and replaces both lists by the kept prompts;
        notifies ``filtered`` and ``changed``. Only the lists change: the files keep every
        prompt until saved. While the sets stay as the filter left them, :meth:`discover`
        passes it on (``keep_if``) so that the circuit records its counts. Keyword
        arguments go to ``filter_by_behaviour`` (``batch_size``, ``system_prompt``...).

        Example:
            >>> pair = editor.filter_by_behaviour(max_new_tokens=16)          # doctest: +SKIP
            >>> pair.summary()                                                 # doctest: +SKIP
            'kept 6 of 8 positive prompts (is_refusal) and 8 of 8 negative prompts (...)'
        """
        if self.model is None:
            raise InvalidArgumentError("this editor has no model to filter with; pass model=")
        positive, negative = self.prompt_set("positive"), self.prompt_set("negative")
        positive.require_nonempty("positive")
        negative.require_nonempty("negative")
        options.setdefault("progress", False)
        with model_lock(self.model):
            pair = workbench.filter_by_behaviour(self.model, positive, negative, shows=shows,
                                                 max_new_tokens=max_new_tokens,
                                                 on_progress=self.progress, **options)
        for side in SIDES:
            self.prompts[side][:] = getattr(pair, side).prompts
        self.last_filter = pair
        self.filtered(pair)
        self.changed()
        return pair

    # -- helpers -----------------------------------------------------------------

    def _filter_applies(self, positive: PromptSet, negative: PromptSet) -> bool:
        """Whether the sets are still exactly what the last behaviour filter kept."""
        pair = self.last_filter
        return (pair is not None and positive.sha256 == pair.positive.sha256
                and negative.sha256 == pair.negative.sha256)

    def _too_long(self, model: WorkbenchModel) -> list[Message]:
        limit = model.context_length
        if limit is None:
            return []
        prompting = model.prompting()
        found = []
        for side in SIDES:
            if not self.prompts[side]:
                continue
            texts = format_prompts(model.tokenizer, self.prompts[side], prompting)
            ids = model.tokenizer(texts, add_special_tokens=not prompting.chat_template)
            for i, tokens in enumerate(ids["input_ids"]):
                if len(tokens) > limit:
                    found.append(Message(
                        "error", f"{side} prompt {i + 1} ({_short(self.prompts[side][i], 30)}) "
                                 f"is {len(tokens)} tokens, longer than the model's context "
                                 f"window of {limit}; shorten or remove it"))
        return found

    def _open(self, side: Side, spec: PromptSource) -> None:
        if isinstance(spec, PromptSet):
            source = spec.metadata.get("source")
            bundled = spec.metadata.get("bundled")
            self._take(side, spec, Path(source) if source and not bundled else None)
        elif isinstance(spec, (str, os.PathLike)) and not (isinstance(spec, str)
                                                           and spec in BUNDLED):
            self.load(side, spec)
        elif isinstance(spec, str):
            self._take(side, PromptSet.bundled(spec), None)
        else:
            self.replace_all(side, list(spec))
            self._saved[side] = None

    def _take(self, side: Side, prompts: PromptSet, path: Path | None) -> None:
        self._check_side(side)
        self.prompts[side] = list(prompts.prompts)
        self.names[side] = prompts.name
        self.paths[side] = path
        self.columns[side] = prompts.metadata.get("column") or "prompt"
        # A bundled or file set starts as saved; a set only in memory does not.
        self._saved[side] = list(prompts.prompts)

    def _side(self, side: Side) -> list[str]:
        return self.prompts[self._check_side(side)]

    @staticmethod
    def _check_side(side: str) -> Side:
        if side not in SIDES:
            raise InvalidArgumentError(f"side must be 'positive' or 'negative', not {side!r}")
        return side

    def _position(self, side: Side, index: int, allow_end: bool = False) -> int:
        size = len(self.prompts[side])
        top = size if allow_end else size - 1
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= top:
            raise InvalidArgumentError(
                f"the {side} set has {size} prompts; {index!r} is not a position in it")
        return index


def _check_text(text: Any) -> str:
    if not isinstance(text, str):
        raise PromptSetError(f"a prompt must be text, not {type(text).__name__}")
    if not text.strip():
        raise PromptSetError("a prompt cannot be blank")
    return text


class _SideView:
    """One column of the editor: list, text box, buttons, file controls."""

    def __init__(self, editor: PromptSetEditor, side: Side) -> None:
        self.editor, self.side = editor, side
        self.title = ipywidgets.HTML()
        self.list = ipywidgets.Select(options=[], rows=10, layout={"width": "100%"})
        self.text = ipywidgets.Textarea(placeholder="prompt text", layout={"width": "100%",
                                                                           "height": "60px"})
        buttons = {name: ipywidgets.Button(description=name, layout={"width": "auto"})
                   for name in ("Add", "Replace", "Remove", "Up", "Down")}
        self.path = ipywidgets.Text(placeholder="prompts.txt / .csv / .jsonl",
                                    layout={"width": "60%"})
        self.load_button = ipywidgets.Button(description="Load", layout={"width": "auto"})
        self.save_button = ipywidgets.Button(description="Save", layout={"width": "auto"})
        c = editor.controller
        act = editor.act
        buttons["Add"].on_click(lambda _b: act(lambda: self._select(c.add(side, self.text.value))))
        buttons["Replace"].on_click(lambda _b: act(
            lambda: c.edit(side, self._chosen(), self.text.value)))
        buttons["Remove"].on_click(lambda _b: act(lambda: c.remove(side, self._chosen())))
        buttons["Up"].on_click(lambda _b: act(lambda: self._shift(-1)))
        buttons["Down"].on_click(lambda _b: act(lambda: self._shift(+1)))
        self.load_button.on_click(lambda _b: act(lambda: c.load(side, self._path())))
        self.save_button.on_click(lambda _b: act(
            lambda: c.save(side, self.path.value.strip() or None)))
        self.list.observe(self._picked, "value")
        self.buttons = buttons
        self.widget = ipywidgets.VBox([
            self.title, self.list, self.text, ipywidgets.HBox(list(buttons.values())),
            ipywidgets.HBox([self.path, self.load_button, self.save_button]),
        ], layout={"width": "49%"})

    def refresh(self) -> None:
        c = self.editor.controller
        prompts = c.prompts[self.side]
        chosen = self.list.value
        self.list.options = [(f"{i + 1}. {' '.join(p.split())[:100]}", i)
                             for i, p in enumerate(prompts)]
        if chosen is not None and prompts:
            self.list.value = min(chosen, len(prompts) - 1)
        path = c.paths[self.side]
        if path is not None and not self.path.value:
            self.path.value = str(path)
        state = (markup.badge("● unsaved changes", "warning") if c.unsaved(self.side)
                 else markup.badge(f"saved in {path}" if path else "bundled set", "ok"))
        self.title.value = (f"<b>{markup.escape(self.side)}</b>: "
                            f"{markup.escape(c.names[self.side])}, {len(prompts)} prompts "
                            f"{state}")

    def _chosen(self) -> int:
        if self.list.value is None:
            raise InvalidArgumentError(f"choose a {self.side} prompt in the list first")
        return self.list.value

    def _select(self, index: int) -> None:
        self.list.value = index

    def _shift(self, step: int) -> None:
        index = self._chosen()
        to = index + step
        self.editor.controller.move(self.side, index, to)
        self.list.value = max(0, min(to, len(self.editor.controller.prompts[self.side]) - 1))

    def _path(self) -> str:
        path = self.path.value.strip()
        if not path:
            raise InvalidArgumentError("type the path of a prompt file first")
        return path

    def _picked(self, change: dict) -> None:
        if change["new"] is not None:
            self.text.value = self.editor.controller.prompts[self.side][change["new"]]


class PromptSetEditor(View):
    """The editor widget: two prompt columns, validation messages, and "Discover".

    Args:
        positive, negative, model, max_imbalance: see :class:`EditorController`.
        filter_tokens: completion length for "Filter by refusal".
        discover_options: defaults for :func:`workbench.discover` (e.g. ``top_k=50``).

    Example:
        >>> editor = PromptSetEditor("qualitative-harmful", "qualitative-benign",
        ...                          model=model)                            # doctest: +SKIP
        >>> editor.controller.discovered.add(lambda circuit: print(len(circuit)))  # doctest: +SKIP
    """

    def __init__(self, positive: PromptsSpec = None, negative: PromptsSpec = None, *,
                 model: WorkbenchModel | None = None,
                 max_imbalance: float | None = DiscoverConfig.max_imbalance,
                 filter_tokens: int = DEFAULT_FILTER_TOKENS, **discover_options: Any) -> None:
        self._build(EditorController(positive, negative, model=model,
                                     max_imbalance=max_imbalance),
                    filter_tokens, discover_options)

    @classmethod
    def from_controller(cls, controller: EditorController, *,
                        filter_tokens: int = DEFAULT_FILTER_TOKENS,
                        **discover_options: Any) -> PromptSetEditor:
        """The view of an existing controller (as :class:`~widgets.CircuitExplorer` does).

        Example:
            >>> view = PromptSetEditor.from_controller(EditorController(["a"], ["b"]))
            >>> view.controller.add("positive", "c")
            1
            >>> "2 prompts" in view.columns["positive"].title.value
            True
        """
        view = cls.__new__(cls)
        view._build(controller, filter_tokens, discover_options)
        return view

    def _build(self, controller: EditorController, filter_tokens: int,
               discover_options: dict[str, Any]) -> None:
        super().__init__()
        self.controller = c = controller
        model, max_imbalance = c.model, c.max_imbalance
        self.discover_options = discover_options
        self.filter_tokens = filter_tokens
        self.columns = {side: _SideView(self, side) for side in SIDES}
        self.messages = ipywidgets.HTML()
        self.allow_lopsided = ipywidgets.Checkbox(value=max_imbalance is None,
                                                  description="allow lopsided sets")
        self.universal = ipywidgets.Checkbox(
            value=discover_options.pop("universal", "default") is not None,
            description="universal-neuron filter")
        self.top_k = ipywidgets.BoundedIntText(value=discover_options.get("top_k") or 0, min=0,
                                               max=10**7, description="top k (0: 0.1%)",
                                               style={"description_width": "initial"},
                                               layout={"width": "200px"})
        self.discover_button = ipywidgets.Button(description="Discover", button_style="primary",
                                                 disabled=model is None)
        self.filter_button = ipywidgets.Button(
            description="Filter by refusal", disabled=model is None,
            tooltip="keep the positive prompts the model refuses and the negative prompts "
                    "it answers (greedy completions, keyword refusal classifier)")
        self.progress = ipywidgets.IntProgress(value=0, min=0, max=1, description="",
                                               layout={"width": "300px"})
        self.allow_lopsided.observe(
            lambda ch: c.set_max_imbalance(
                None if ch["new"] else max_imbalance or DiscoverConfig.max_imbalance), "value")
        self.discover_button.on_click(lambda _b: self.act(self.discover))
        self.filter_button.on_click(lambda _b: self.act(self.filter))
        c.changed.add(self.refresh)
        c.progress.add(self._progressed)
        self.widget = ipywidgets.VBox([
            ipywidgets.HBox([self.columns[side].widget for side in SIDES]),
            self.messages,
            ipywidgets.HBox([self.top_k, self.universal, self.allow_lopsided]),
            ipywidgets.HBox([self.filter_button, self.discover_button, self.progress]),
            self.status,
        ])
        self.refresh()

    def discover(self) -> Circuit:
        """Discover with the options chosen in the widget (runs in the kernel; progress shows)."""
        options = dict(self.discover_options)
        if self.top_k.value:
            options["top_k"] = self.top_k.value
        if not self.universal.value:
            options["universal"] = None
        self.discover_button.disabled = True
        self.say("info", "discovering…")
        try:
            circuit = self.controller.discover(**options)
        finally:
            self.discover_button.disabled = self.controller.model is None
        self.say("ok", f"discovered {len(circuit)} neurons; layers {circuit.layer_counts()}")
        return circuit

    def filter(self) -> FilteredPair:
        """Filter both sets by the model's refusals; the status line reports the counts."""
        self.filter_button.disabled = True
        self.say("info", "filtering by the model's refusals…")
        try:
            pair = self.controller.filter_by_behaviour(max_new_tokens=self.filter_tokens)
        finally:
            self.filter_button.disabled = self.controller.model is None
        self.say("ok", pair.summary())
        return pair

    def refresh(self) -> None:
        """Re-draw the columns and the validation messages from the controller."""
        for column in self.columns.values():
            column.refresh()
        self.messages.value = markup.messages((m.level, m.text)
                                              for m in self.controller.validate())

    def _progressed(self, stage: str, done: int, total: int) -> None:
        self.progress.max = max(total, 1)
        self.progress.value = done
        self.progress.description = stage
