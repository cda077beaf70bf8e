"""Reading a sweep's results file (parquet) back, checked, to resume or to analyse it.

A sweep writes its rows to a parquet file after every batch and reads the file back to
resume (:func:`workbench.evaluation.sweep`). A file that is truncated, is not parquet, or
is parquet but not a sweep's rows (a missing column, a value of the wrong type, a NaN
multiplier, a negative prompt index, a condition listed twice) would otherwise fail deep
inside pyarrow or pandas, or be resumed wrongly. :func:`read_results` refuses it with one
line, and leaves the file as it is.

Example:
    >>> import tempfile, pathlib
    >>> bad = pathlib.Path(tempfile.mkdtemp()) / "results.parquet"
    >>> _ = bad.write_text("benchmark,intervention\\n")
    >>> read_results(bad)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    workbench.errors.FileFormatError: sweep results file '...' cannot be read as parquet ...
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd
from pandas.api import types

from .errors import FileFormatError

#: columns every sweep row has (its key is benchmark, intervention, [size,] multiplier,
#: prompt_index)
REQUIRED = ("benchmark", "intervention", "multiplier", "prompt_index", "prompt", "completion")
TEXT_COLUMNS = ("benchmark", "intervention", "kind", "prompt", "completion")
_FIX = "write the sweep to a new file, or move this one away to start again"


def read_results(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The rows of a sweep results file, after checking that a sweep could have written them.

    Checks that the file is readable parquet; that it has the columns of
    :data:`REQUIRED`; that the text columns hold text, ``prompt_index`` integers >= 0,
    ``multiplier`` and ``strength`` finite numbers, ``size`` (when present) integers >= 1
    or empty, ``refusal`` booleans and ``quality`` numbers in [0, 1]; and that no
    condition and prompt appears twice. Other columns (further metrics) are kept as they
    are. Raises :class:`~workbench.errors.FileFormatError`.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "rows.parquet"
        >>> pd.DataFrame({"benchmark": ["b"], "intervention": ["cna"], "multiplier": [0.0],
        ...               "prompt_index": [0], "prompt": ["Hi"],
        ...               "completion": ["Hello"]}).to_parquet(p, index=False)
        >>> len(read_results(p))
        1
    """
    path = Path(path)
    shown = f"sweep results file {str(path)!r}"
    if path.is_dir():
        raise FileFormatError(f"{shown} is a folder; give the sweep a .parquet file")
    try:
        frame = pd.read_parquet(path)
    # pyarrow's reader of an untrusted file: ArrowInvalid, OSError, decompression and
    # thrift errors all mean the same thing here.
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise FileFormatError(f"{shown} cannot be read as parquet ({reason}): it is "
                              f"truncated or not a results file; {_FIX}") from None
    missing = [column for column in REQUIRED if column not in frame.columns]
    if missing:
        raise FileFormatError(f"{shown} is not a sweep's results: it lacks the column(s) "
                              f"{missing}; {_FIX}")
    _check_columns(frame, shown)
    key = ["benchmark", "intervention", *(["size"] if "size" in frame else []), "multiplier",
           "prompt_index"]
    repeated = int(frame.duplicated(subset=key).sum())
    if repeated:
        raise FileFormatError(f"{shown} lists {repeated} condition and prompt row(s) twice, "
                              f"which a sweep never writes; {_FIX}")
    return frame


def _check_columns(frame: pd.DataFrame, shown: str) -> None:
    for column in (c for c in TEXT_COLUMNS if c in frame):
        if not frame[column].map(lambda v: isinstance(v, str)).all():
            raise _wrong(shown, column, "text")
    index = frame["prompt_index"]
    if not types.is_integer_dtype(index) or index.isna().any() or (index < 0).any():
        raise _wrong(shown, "prompt_index", "integers >= 0")
    for column in (c for c in ("multiplier", "strength") if c in frame):
        if not _finite_numbers(frame[column]):
            raise _wrong(shown, column, "finite numbers")
    if "size" in frame:
        size = frame["size"]
        if not types.is_integer_dtype(size) or (size.dropna() < 1).any():
            raise _wrong(shown, "size", "neuron counts >= 1 or empty")
    if "refusal" in frame and not types.is_bool_dtype(frame["refusal"]):
        raise _wrong(shown, "refusal", "true or false")
    if "quality" in frame and not (_finite_numbers(frame["quality"])
                                   and frame["quality"].between(0, 1).all()):
        raise _wrong(shown, "quality", "numbers in [0, 1]")


def _finite_numbers(column: pd.Series) -> bool:
    return (types.is_numeric_dtype(column) and not types.is_bool_dtype(column)
            and not column.isna().any()
            and all(math.isfinite(float(v)) for v in column))


def _wrong(shown: str, column: str, expected: str) -> FileFormatError:
    return FileFormatError(f"{shown}: column {column!r} must hold {expected}; the file was "
                           f"changed or damaged after the sweep wrote it; {_FIX}")
