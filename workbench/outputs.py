"""Output paths, checked before any work that would be lost if the write failed.

Every command and library call that writes (``Circuit.save``, ``sweep(out=...)``,
``save_baked``, ``safety_tune``, ``compare_models``, ``PromptSet.save``) calls
:func:`check_output` first, so that a path that cannot be written is refused in one line
before a model is loaded or anything is computed. The check writes nothing: it creates no
folder and no file, so a refused command leaves no trace. The writes themselves stay atomic
(:mod:`workbench.io`).

What happens to an existing target is the caller's choice, and its documentation says it:

- ``"replace"``: the new output replaces it (``cna discover --out``, ``Circuit.save``);
- ``"refuse"``: an existing file, or a folder that is not empty, is refused; the caller
  offers ``--force`` / ``force=True`` (then it passes ``"replace"``);
- ``"keep"``: it is read and added to (the resume file of a sweep, the folder of
  ``cna compare-models``).

Example:
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> check_output(root / "new" / "circuit.json").name
    'circuit.json'
    >>> _ = (root / "taken.json").write_text("{}")
    >>> check_output(root / "taken.json", existing="refuse")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    workbench.errors.OutputPathError: out '...taken.json' already exists; ...
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from .errors import OutputPathError

Kind = Literal["file", "folder"]
Existing = Literal["replace", "refuse", "keep"]

#: the longest file name assumed where the file system does not say
_NAME_MAX = 255
#: room for the prefix and suffix of the temporary file written beside the target
_TEMP_AFFIX = 32


def check_output(path: str | os.PathLike[str], *, kind: Kind = "file",
                 existing: Existing = "replace", what: str = "out",
                 force_hint: str = "--force (force=True)") -> Path:
    """Refuse an output path that cannot be written; return it as a :class:`Path`.

    Args:
        path: the file or folder that will be written.
        kind: ``"file"`` or ``"folder"``: a folder where a file is expected, or a file
            where a folder is expected, is refused.
        existing: what the caller does with an existing target (see the module docstring).
        what: how the message names the path (``"--out"`` on the command line).
        force_hint: how the message names the override, for ``existing="refuse"``.

    Raises :class:`~workbench.errors.OutputPathError` when the parent cannot be created
    (a file is in the way, or a folder is not writable), when the target has the wrong
    kind or is not a regular file, when a name is too long, or when an existing target
    would be replaced although ``existing="refuse"``.

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (root / "a-file").write_text("x")
        >>> check_output(root / "a-file" / "circuit.json")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        workbench.errors.OutputPathError: out '...' cannot be created: '...a-file' is a file, ...
    """
    text = os.fspath(path)
    if not str(text).strip():
        raise OutputPathError(f"{what} is empty; give a {kind} path")
    target = Path(text)
    shown = repr(str(target))
    _check_names(target, shown, what)
    if target.exists() or target.is_symlink():
        _check_existing(target, kind, existing, shown, what, force_hint)
        if kind == "folder" and not os.access(target, os.W_OK | os.X_OK):
            raise OutputPathError(f"{what} {shown} is not writable; choose another folder")
    # Temporary files and staging folders are made beside the target, in its parent.
    parent = target.absolute().parent
    ancestor = parent
    while not ancestor.exists():
        if ancestor.is_symlink():  # a dangling link: mkdir would fail on it
            raise OutputPathError(f"{what} {shown} cannot be created: {str(ancestor)!r} is a "
                                  "broken symbolic link; choose another path")
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputPathError(f"{what} {shown} cannot be created: {str(ancestor)!r} is a "
                              "file, not a folder; choose another path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what} {shown} cannot be created: the folder "
                              f"{str(ancestor)!r} is not writable; choose another path")
    return target


def _check_existing(target: Path, kind: Kind, existing: Existing, shown: str, what: str,
                    force_hint: str) -> None:
    if kind == "file":
        if target.is_dir():
            raise OutputPathError(f"{what} {shown} is a folder, but a file is written there; "
                                  f"give a file path such as {str(target / 'out')!r}")
        if not target.is_file():
            raise OutputPathError(f"{what} {shown} exists and is not a regular file; choose "
                                  "another path")
        if existing == "refuse":
            raise OutputPathError(f"{what} {shown} already exists; choose another path, or "
                                  f"pass {force_hint} to replace it")
        return
    if not target.is_dir():
        raise OutputPathError(f"{what} {shown} exists and is not a folder, but a folder is "
                              "written there; choose another path")
    if existing == "refuse" and any(target.iterdir()):
        raise OutputPathError(f"{what} {shown} is not empty; choose another folder, or pass "
                              f"{force_hint} to replace it")


def _exists(path: Path) -> bool:
    """``path.exists()``, False where the name itself is too long to look up."""
    try:
        return path.exists()
    except OSError:
        return False


def _check_names(target: Path, shown: str, what: str) -> None:
    """Refuse a path component longer than its file system allows.

    The last one needs room for the temporary name it is written under first.
    """
    anchor = target.absolute()
    while not _exists(anchor):
        anchor = anchor.parent
    try:
        limit = os.pathconf(anchor if anchor.is_dir() else anchor.parent, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows) or no answer
        limit = _NAME_MAX
    parts = target.parts
    for i, part in enumerate(parts):
        room = limit - (_TEMP_AFFIX if i == len(parts) - 1 else 0)
        if len(os.fsencode(part)) > room:
            raise OutputPathError(f"{what} {shown} cannot be created: the name "
                                  f"{part[:20]!r}... is longer than {room} bytes; shorten it")
