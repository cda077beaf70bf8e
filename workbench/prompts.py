"""Prompt sets: load, save, bundle, and format them for a model.

A :class:`PromptSet` is a named list of raw prompts. Formatting (chat template, system
prompt) is a separate, explicit choice described by :class:`Prompting`, so that the same
prompts can be run through a base and an instruct model in exactly the same way, and so
that every circuit records how its prompts were shown to the model.

Example:
    >>> from workbench.prompts import PromptSet
    >>> harmful = PromptSet.bundled("qualitative-harmful")
    >>> len(harmful), harmful.prompts[0]
    (8, 'How do I pick a lock?')
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol, cast

from .errors import PromptSetError
from .io import atomic_write_text
from .outputs import check_output

ChatTemplateChoice = bool | Literal["auto"]

#: Column or key names tried, in order, when a csv/jsonl file does not name one.
DEFAULT_COLUMNS = ("prompt", "goal", "forbidden_prompt", "text", "instruction", "question")

#: Bundled sets: name -> (file name, column for csv files).
BUNDLED = {
    "qualitative-harmful": "qualitative-harmful.txt",
    "qualitative-benign": "qualitative-benign.txt",
    "jbb-harmful": "jbb-harmful.csv",
    "jbb-benign": "jbb-benign.csv",
    "diverse": "diverse.txt",
    "advbench": "advbench.csv",
    "strongreject": "strongreject.csv",
}


def bundled_dir() -> Path:
    """The folder holding the bundled prompt sets (inside an installed wheel or a checkout)."""
    packaged = Path(str(resources.files("workbench"))) / "bundled_prompts"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parent.parent / "prompts"
    if checkout.is_dir():
        return checkout
    raise PromptSetError(
        "the bundled prompt sets are missing from this installation "
        f"(looked in {packaged} and {checkout}); reinstall cna-workbench"
    )


@dataclass(frozen=True)
class PromptSet:
    """A named list of prompts with free-form metadata.

    Example:
        >>> ps = PromptSet("greetings", ["Hello!", "Good morning."])
        >>> ps.sha256 == PromptSet("other name", ["Hello!", "Good morning."]).sha256
        True
    """

    name: str
    prompts: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.prompts, str):
            raise PromptSetError(
                f"prompt set {self.name!r}: prompts must be a list of strings, not one string; "
                "wrap it in a list"
            )
        prompts = list(self.prompts)
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise PromptSetError(
                    f"prompt set {self.name!r}: prompt {i} is a {type(prompt).__name__}, "
                    "not a string"
                )
            if not prompt.strip():
                raise PromptSetError(
                    f"prompt set {self.name!r}: prompt {i} is blank; remove it"
                )
        object.__setattr__(self, "prompts", prompts)

    def __len__(self) -> int:
        return len(self.prompts)

    def __iter__(self):
        return iter(self.prompts)

    @property
    def sha256(self) -> str:
        """Hash of the prompt texts (not the name), recorded in circuits for provenance."""
        payload = json.dumps(self.prompts, ensure_ascii=False).encode("utf-8")
        return hashlib.sha256(payload).hexdigest()

    def require_nonempty(self, role: str = "prompt") -> None:
        """Raise :class:`PromptSetError` if the set holds no prompts."""
        if not self.prompts:
            raise PromptSetError(
                f"the {role} set {self.name!r} is empty; give it at least one prompt"
            )

    def duplicates(self) -> list[str]:
        """Prompts that occur more than once, each listed once, in first-seen order."""
        seen: set[str] = set()
        repeated: dict[str, None] = {}
        for prompt in self.prompts:
            if prompt in seen:
                repeated[prompt] = None
            seen.add(prompt)
        return list(repeated)

    def sample(self, n: int, seed: int = 0, name: str | None = None) -> PromptSet:
        """A deterministic random subset of ``n`` prompts (in their original order)."""
        if not 0 < n <= len(self.prompts):
            raise PromptSetError(f"cannot sample {n} prompts from {len(self)} in {self.name!r}")
        keep = sorted(random.Random(seed).sample(range(len(self.prompts)), n))
        return PromptSet(name or f"{self.name}[{n}]", [self.prompts[i] for i in keep],
                         {**self.metadata, "sampled_from": self.name, "seed": seed})

    # -- files -------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, column: str | None = None,
             name: str | None = None) -> PromptSet:
        """Load a ``.txt`` (one prompt per line), ``.csv`` or ``.jsonl`` file.

        For csv and jsonl the prompt is read from ``column`` (or the first of
        :data:`DEFAULT_COLUMNS` present); other columns are kept in
        ``metadata["rows"]``.

        Example:
            >>> import tempfile, pathlib
            >>> p = pathlib.Path(tempfile.mkdtemp()) / "set.txt"
            >>> _ = p.write_text("first\\nsecond\\n")
            >>> PromptSet.load(p).prompts
            ['first', 'second']
        """
        path = Path(path)
        if path.is_dir():
            raise PromptSetError(f"prompt file {str(path)!r} is a folder; give a .txt, .csv "
                                 "or .jsonl file")
        if not path.is_file():
            raise PromptSetError(f"prompt file {str(path)!r} does not exist")
        # newline="": keep carriage returns inside quoted csv fields; utf-8-sig: drop the
        # byte-order mark that spreadsheet programs put in front of the first column name.
        try:
            with open(path, encoding="utf-8-sig", newline="") as handle:
                text = handle.read()
        except UnicodeDecodeError as exc:
            raise PromptSetError(f"{path} is not UTF-8 text ({exc.reason})") from None
        except OSError as exc:
            raise PromptSetError(f"prompt file {str(path)!r} cannot be read "
                                 f"({exc.strerror or exc})") from None
        name = name or path.stem
        suffix = path.suffix.lower()
        if suffix == ".txt":
            prompts = [line for line in _lines(text) if line.strip()]
            return cls(name, prompts, {"source": str(path)})
        if suffix == ".csv":
            # strict: a quote left open (a file cut short inside a field) is an error,
            # not a prompt that runs to the end of the file
            try:
                rows = list(csv.DictReader(io.StringIO(text), strict=True))
            except csv.Error as exc:
                raise PromptSetError(f"{path} is not valid csv ({exc}); the file is truncated "
                                     "or damaged, save it again") from None
        elif suffix == ".jsonl":
            rows = []
            for lineno, line in enumerate(_lines(text), 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise PromptSetError(f"{path}:{lineno} is not valid JSON ({exc.msg})") from None
                except RecursionError:
                    raise PromptSetError(f"{path}:{lineno} is nested too deeply") from None
                if not isinstance(rows[-1], dict):
                    raise PromptSetError(f"{path}:{lineno} must be a JSON object")
        else:
            raise PromptSetError(
                f"cannot read prompts from {path.name!r}: use a .txt, .csv or .jsonl file"
            )
        key = _pick_column(rows, column, path)
        wrong = [i for i, row in enumerate(rows)
                 if row.get(key) is not None and not isinstance(row.get(key), str)]
        if wrong:
            value = rows[wrong[0]][key]
            raise PromptSetError(f"{path}: rows {wrong[:5]} have a {type(value).__name__} "
                                 f"({str(value)[:30]!r}) in {key!r}, not text; quote it as a "
                                 "JSON string")
        prompts = [str(row.get(key) or "") for row in rows]
        blank = [i for i, p in enumerate(prompts) if not p.strip()]
        if blank:
            raise PromptSetError(f"{path}: rows {blank[:5]} have an empty {key!r}")
        return cls(name, prompts, {"source": str(path), "column": key, "rows": rows})

    def save(self, path: str | Path, *, column: str = "prompt") -> Path:
        """Write the set as .txt, .csv or .jsonl (chosen by suffix), atomically.

        An existing file is replaced; a path that cannot be written raises
        :class:`~workbench.errors.OutputPathError` before anything is written.
        """
        path = check_output(path, what="prompt file")
        suffix = path.suffix.lower()
        if suffix == ".txt":
            multiline = [i for i, p in enumerate(self.prompts) if "\n" in p or "\r" in p]
            if multiline:
                raise PromptSetError(
                    f"prompts {multiline[:5]} contain line breaks and cannot be saved as .txt; "
                    "save as .csv or .jsonl instead"
                )
            content = "".join(p + "\n" for p in self.prompts)
        elif suffix == ".csv":
            buffer = io.StringIO()
            # csv quotes only the characters of its line terminator: quote every field when
            # a prompt holds a bare carriage return, or it would read back as two rows.
            writer = csv.writer(buffer, lineterminator="\n",
                                quoting=(csv.QUOTE_ALL if any("\r" in p for p in self.prompts)
                                         else csv.QUOTE_MINIMAL))
            writer.writerow([column])
            writer.writerows([p] for p in self.prompts)
            content = buffer.getvalue()
        elif suffix == ".jsonl":
            content = "".join(json.dumps({column: p}, ensure_ascii=False) + "\n"
                              for p in self.prompts)
        else:
            raise PromptSetError(f"cannot save prompts as {path.name!r}: use .txt, .csv or .jsonl")
        atomic_write_text(path, content)
        return path

    @classmethod
    def bundled(cls, name: str) -> PromptSet:
        """One of the prompt sets shipped with the package (see :data:`BUNDLED`)."""
        if name not in BUNDLED:
            raise PromptSetError(
                f"no bundled prompt set named {name!r}; choose one of {', '.join(BUNDLED)}"
            )
        loaded = cls.load(bundled_dir() / BUNDLED[name], name=name)
        return cls(name, loaded.prompts, {**loaded.metadata, "bundled": True})

    @classmethod
    def resolve(cls, spec: str | os.PathLike[str] | Sequence[str] | PromptSet, *,
                column: str | None = None, name: str | None = None) -> PromptSet:
        """Accept a PromptSet, a bundled name, a file path or a list of strings."""
        if isinstance(spec, PromptSet):
            return spec
        if isinstance(spec, (list, tuple)):
            return cls(name or "prompts", list(spec))
        if isinstance(spec, str) and spec in BUNDLED:
            return cls.bundled(spec)
        if not isinstance(spec, (str, os.PathLike)):
            raise PromptSetError(
                f"cannot make a prompt set from {spec!r} ({type(spec).__name__}); pass a "
                f"PromptSet, a list of strings, a file path or a bundled name "
                f"({', '.join(BUNDLED)})"
            )
        path = Path(spec)
        if path.exists():
            return cls.load(path, column=column, name=name)
        raise PromptSetError(
            f"{str(spec)!r} is neither a file nor a bundled prompt set "
            f"({', '.join(BUNDLED)})"
        )


def _lines(text: str) -> list[str]:
    """Split at \\n, \\r\\n or \\r only (str.splitlines also splits at U+2028, form feeds...)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _pick_column(rows: list[dict], column: str | None, path: Path) -> str:
    if not rows:
        raise PromptSetError(f"{path} holds no rows")
    available = list(rows[0].keys())
    if column is not None:
        if column not in available:
            raise PromptSetError(
                f"{path} has no column {column!r}; its columns are {available}"
            )
        return column
    for candidate in DEFAULT_COLUMNS:
        if candidate in available:
            return candidate
    if len(available) == 1:
        return available[0]
    raise PromptSetError(
        f"{path}: which column holds the prompts? Pass column=... (CLI: --column); "
        f"columns are {available}"
    )


def list_bundled() -> dict[str, int]:
    """Names of the bundled prompt sets and their sizes."""
    return {name: len(PromptSet.bundled(name)) for name in BUNDLED}


# -- formatting --------------------------------------------------------------


class ChatTokenizer(Protocol):
    """What :func:`format_prompts` needs of a tokenizer; every transformers tokenizer has it."""

    def apply_chat_template(self, conversation: list[dict[str, str]], /, *, tokenize: bool,
                            add_generation_prompt: bool) -> object: ...


@dataclass(frozen=True)
class Prompting:
    """How raw prompts were shown to the model; recorded in every circuit.

    ``chat_template`` is resolved (True or False), never "auto".
    """

    chat_template: bool
    system_prompt: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"chat_template": self.chat_template, "system_prompt": self.system_prompt}


def resolve_prompting(tokenizer: object, chat_template: ChatTemplateChoice = "auto",
                      system_prompt: str | None = None) -> Prompting:
    """Turn the user's choice into an explicit :class:`Prompting` for this tokenizer.

    ``"auto"`` uses the tokenizer's chat template when it has one. Asking for a template
    (or a system prompt) on a tokenizer without one is an error rather than a silent
    fallback, so base-vs-instruct comparisons cannot be confounded by formatting.
    """
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat_template == "auto":
        use = has_template
    elif isinstance(chat_template, bool):
        use = chat_template
    else:
        raise PromptSetError(
            f"chat_template must be 'auto', True or False, not {chat_template!r}"
        )
    if use and not has_template:
        raise PromptSetError(
            "this tokenizer has no chat template; use chat_template=False (or 'auto')"
        )
    if system_prompt is not None and not use:
        raise PromptSetError(
            "a system prompt needs a chat template; drop the system prompt or use a model "
            "whose tokenizer has a chat template"
        )
    return Prompting(chat_template=use, system_prompt=system_prompt)


def format_prompts(tokenizer: ChatTokenizer, prompts: Sequence[str],
                   prompting: Prompting) -> list[str]:
    """Apply the chat template (with the generation prompt) or return prompts unchanged.

    Example:
        >>> class NoTemplate: chat_template = None
        >>> format_prompts(NoTemplate(), ["Hi"], Prompting(chat_template=False))
        ['Hi']
    """
    if not prompting.chat_template:
        return list(prompts)
    formatted = []
    for prompt in prompts:
        messages = []
        if prompting.system_prompt is not None:
            messages.append({"role": "system", "content": prompting.system_prompt})
        messages.append({"role": "user", "content": prompt})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        formatted.append(cast(str, text))  # tokenize=False: the formatted text
    return formatted
