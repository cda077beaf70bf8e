"""Checks of model files before transformers reads them: GGUF files and model folders.

transformers' readers fail on a truncated or corrupted file with a long traceback from deep
inside (``struct.error``, a safetensors error, a numpy ``ValueError``). These checks read
only headers and small tensors, and raise :class:`~workbench.errors.ModelLoadError` with
one line that says what is wrong with the file and what to do.

Example:
    >>> import tempfile, pathlib
    >>> bad = pathlib.Path(tempfile.mkdtemp()) / "model.gguf"
    >>> _ = bad.write_bytes(b"GGUF\\x03\\x00")
    >>> check_gguf(bad)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    workbench.errors.ModelLoadError: GGUF file '...model.gguf' is truncated (6 bytes, ...
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelLoadError

GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)
#: magic, version, tensor count and key-value count
_GGUF_HEADER = struct.Struct("<4sIQQ")
#: the fewest bytes one tensor description or one key-value pair can take
_GGUF_MIN_ENTRY = 8
#: elements checked for finiteness at a time
_BLOCK = 1 << 22

#: weight files a ``from_pretrained`` folder may hold (single file or sharded with an index)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")

_REDOWNLOAD = "download or convert it again"


def check_gguf(path: str | os.PathLike[str]) -> Path:
    """Refuse a GGUF file that is truncated, corrupted or not a model; return its path.

    Checks the magic, version and counts of the header, parses every key and tensor
    description (with the ``gguf`` package's reader), that every tensor's data lies inside
    the file, that the file names an architecture, and that its float32/float16 tensors
    hold only finite numbers. Quantised blocks are not decoded.

    Example:
        >>> import tempfile, pathlib
        >>> text = pathlib.Path(tempfile.mkdtemp()) / "notes.gguf"
        >>> _ = text.write_text("hello, this is not a model at all")
        >>> check_gguf(text)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        workbench.errors.ModelLoadError: ...is not a GGUF file (it starts with b'hell'...
    """
    path = Path(path)
    shown = f"GGUF file {str(path)!r}"
    if not path.is_file():
        raise ModelLoadError(f"{shown} does not exist")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(_GGUF_HEADER.size)
    if not GGUF_MAGIC.startswith(head[:4]):  # a prefix of the magic is a truncated file
        raise ModelLoadError(f"{shown} is not a GGUF file (it starts with {head[:4]!r}, "
                             f"not {GGUF_MAGIC!r}); give a .gguf model file")
    if len(head) < _GGUF_HEADER.size:
        raise ModelLoadError(f"{shown} is truncated ({size} bytes, shorter than a GGUF "
                             f"header); {_REDOWNLOAD}")
    _, version, n_tensors, n_fields = _GGUF_HEADER.unpack(head)
    if version not in GGUF_VERSIONS:
        raise ModelLoadError(f"{shown} has GGUF version {version}, not one of "
                             f"{GGUF_VERSIONS}; convert it with a current llama.cpp")
    if (n_tensors + n_fields) * _GGUF_MIN_ENTRY > size:
        raise ModelLoadError(f"{shown} is corrupted: its header announces {n_tensors} tensors "
                             f"and {n_fields} keys, more than {size} bytes can hold; "
                             f"{_REDOWNLOAD}")
    reader = _read_gguf(path, shown)
    if len(reader.tensors) != n_tensors or n_tensors == 0:
        raise ModelLoadError(f"{shown} holds {len(reader.tensors)} readable tensors of the "
                             f"{n_tensors} its header announces; {_REDOWNLOAD}")
    field = reader.fields.get("general.architecture")
    architecture = _field_text(field)
    if not architecture:
        raise ModelLoadError(f"{shown} names no architecture (general.architecture is "
                             "missing or not text): it is not a model file; " + _REDOWNLOAD)
    for tensor in reader.tensors:
        end = int(tensor.data_offset) + int(tensor.n_bytes)
        if end > size or tensor.data.nbytes != int(tensor.n_bytes):
            raise ModelLoadError(f"{shown} is truncated: tensor {tensor.name!r} ends at byte "
                                 f"{end}, beyond the file's {size} bytes; {_REDOWNLOAD}")
        if np.issubdtype(tensor.data.dtype, np.floating) and not _all_finite(tensor.data):
            raise ModelLoadError(f"{shown} is corrupted: tensor {tensor.name!r} holds NaN or "
                                 f"infinite values; {_REDOWNLOAD}")
    return path


def _read_gguf(path: Path, shown: str) -> Any:
    from gguf import GGUFReader

    try:
        return GGUFReader(path)
    # The reader of an untrusted file: any failure (struct.error, ValueError, IndexError,
    # KeyError, UnicodeDecodeError, OverflowError...) means the file cannot be read.
    except Exception as exc:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
        raise ModelLoadError(f"{shown} is truncated or corrupted and cannot be read "
                             f"({reason}); {_REDOWNLOAD}") from None


def _field_text(field: Any) -> str | None:
    if field is None:
        return None
    try:
        value = field.contents()
    except Exception:  # a field of the wrong type or with corrupted parts
        return None
    return value if isinstance(value, str) and value.strip() else None


def _all_finite(values: np.ndarray) -> bool:
    flat = values.reshape(-1)
    return all(bool(np.isfinite(flat[start:start + _BLOCK]).all())
               for start in range(0, flat.size, _BLOCK))


def check_model_folder(path: str | os.PathLike[str]) -> Path:
    """Refuse a ``from_pretrained`` folder that is incomplete or corrupted; return its path.

    Checks that ``config.json`` is a JSON object naming a ``model_type``, that the folder
    holds weights (``model.safetensors``, ``pytorch_model.bin``, or shards with their index),
    that every shard an index names is there, and that every ``.safetensors`` file has a
    readable header whose tensors fit exactly in the file (a truncated download does not).

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> check_model_folder(folder)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        workbench.errors.ModelLoadError: model folder '...' has no config.json: ...
    """
    folder = Path(path)
    shown = f"model folder {str(folder)!r}"
    if not folder.is_dir():
        raise ModelLoadError(f"{shown} does not exist or is not a folder")
    config = _json_object(folder / "config.json", shown,
                          missing="it is not a folder written by save_pretrained; give such "
                                  "a folder, a .gguf file, a hub id or an embedded name")
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ModelLoadError(f"{shown}: config.json names no model_type (found "
                             f"{model_type!r}); save the model again with save_pretrained")
    present = [name for name in WEIGHT_FILES if (folder / name).is_file()]
    shards = sorted(folder.glob("*.safetensors"))
    if not present and not shards:
        raise ModelLoadError(f"{shown} holds no weights ({', '.join(WEIGHT_FILES[::2])} or "
                             "shards with their index); copy or download them again")
    for index in (name for name in present if name.endswith(".index.json")):
        _check_index(folder, index, shown)
    for shard in shards:
        check_safetensors(shard)
    return folder


def _json_object(path: Path, shown: str, *, missing: str) -> dict[str, Any]:
    if not path.is_file():
        raise ModelLoadError(f"{shown} has no {path.name}: {missing}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())
        raise ModelLoadError(f"{shown}: {path.name} is not valid JSON ({reason}); the file "
                             "is truncated or corrupted, save or download it again") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{shown}: {path.name} must hold a JSON object, not "
                             f"{type(data).__name__}; save or download it again")
    return data


def _check_index(folder: Path, name: str, shown: str) -> None:
    index = _json_object(folder / name, shown, missing="")
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise ModelLoadError(f"{shown}: {name} has no weight_map of tensor names to shard "
                             "files; download or save the model again")
    missing = sorted({v for v in weight_map.values() if not (folder / v).is_file()})
    if missing:
        raise ModelLoadError(f"{shown}: {name} names {len(missing)} shard(s) that are not "
                             f"there ({', '.join(missing[:3])}); download them again")


def check_safetensors(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Check a ``.safetensors`` file's header against its size; return the tensor entries.

    The header must be a JSON object whose tensors each have a dtype, a shape of
    non-negative integers and ``data_offsets`` ``[start, end]``; the data must fill the rest
    of the file exactly. Raises :class:`~workbench.errors.ModelLoadError`.

    Example:
        >>> import tempfile, pathlib, torch
        >>> from safetensors.torch import save_file
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "w.safetensors"
        >>> save_file({"w": torch.zeros(2, 3)}, p)
        >>> check_safetensors(p)["w"]["shape"]
        [2, 3]
    """
    path = Path(path)
    shown = f"weights file {str(path)!r}"
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ModelLoadError(f"{shown} is truncated ({size} bytes); {_REDOWNLOAD}")
        (length,) = struct.unpack("<Q", prefix)
        if length > size - 8:
            raise ModelLoadError(f"{shown} is truncated: its header alone is announced as "
                                 f"{length} bytes, the file has {size}; {_REDOWNLOAD}")
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelLoadError(f"{shown} is corrupted: its header is not valid JSON; "
                             f"{_REDOWNLOAD}") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{shown} is corrupted: its header is not a JSON object; "
                             f"{_REDOWNLOAD}")
    tensors = {name: entry for name, entry in header.items() if name != "__metadata__"}
    end = 0
    for name, entry in tensors.items():
        if not _valid_entry(entry):
            raise ModelLoadError(f"{shown} is corrupted: the header entry of {name!r} has no "
                                 f"valid dtype, shape and data_offsets; {_REDOWNLOAD}")
        end = max(end, entry["data_offsets"][1])
    available = size - 8 - length
    if end != available:
        problem = "truncated" if end > available else "corrupted"
        raise ModelLoadError(f"{shown} is {problem}: its tensors need {end} bytes of data, "
                             f"the file holds {available}; {_REDOWNLOAD}")
    return tensors


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _valid_entry(entry: Any) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("dtype"), str):
        return False
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    return (isinstance(shape, list) and all(_whole(d) for d in shape)
            and isinstance(offsets, list) and len(offsets) == 2
            and all(_whole(o) for o in offsets) and offsets[0] <= offsets[1])
