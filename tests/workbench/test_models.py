"""Model wrapping and loading: adapters, unknown architectures, local folders, errors."""

from __future__ import annotations

import pytest
import torch
import transformers
from tokenizers import Tokenizer
from tests.helpers import TINY_ARCHITECTURES, make_tiny_hf

import workbench
from workbench.activations import collect
from workbench.architectures import ADAPTERS, ArchitectureAdapter, register_adapter
from workbench.errors import InvalidArgumentError, ModelLoadError, UnsupportedArchitectureError

EXPECTED_DOWN_PROJ = {"gpt2": "transformer.h.1.mlp.c_proj",
                      "gpt_neox": "gpt_neox.layers.1.mlp.dense_4h_to_h",
                      "gemma3": "model.language_model.layers.1.mlp.down_proj"}


def test_every_adapter_has_a_tiny_model():
    assert set(ADAPTERS) == set(TINY_ARCHITECTURES)


def test_adapter_names_the_down_projection(tiny_model):
    model_type = tiny_model.config.model_type
    assert tiny_model.n_layers == 2
    assert tiny_model.d_mlp == 96
    assert tiny_model.n_neurons == 192
    path = EXPECTED_DOWN_PROJ.get(model_type, "model.layers.1.mlp.down_proj")
    assert tiny_model.down_proj_path(1) == path
    assert tiny_model.down_proj(1) is tiny_model.hf_model.get_submodule(path)
    assert tiny_model.info() == {"name": f"tiny-{model_type}",
                                 "architecture": type(tiny_model.hf_model).__name__,
                                 "n_layers": 2, "d_mlp": 96}


def test_unknown_architecture_error_explains_how_to_register(tiny_tokenizer):
    config = transformers.GPTJConfig(vocab_size=512, n_embd=64, n_layer=2, n_head=4,
                                     rotary_dim=8, n_positions=128)
    hf = transformers.GPTJForCausalLM(config)
    with pytest.raises(UnsupportedArchitectureError) as info:
        workbench.from_hf(hf, tiny_tokenizer)
    message = str(info.value)
    assert "GPTJForCausalLM" in message
    assert "llama" in message and "gpt_neox" in message
    assert "register_adapter" in message


def test_registering_an_adapter_adds_an_architecture(tiny_tokenizer, monkeypatch):
    monkeypatch.setattr("workbench.architectures.ADAPTERS", dict(ADAPTERS))
    config = transformers.GPTJConfig(vocab_size=512, n_embd=64, n_inner=80, n_layer=2,
                                     n_head=4, rotary_dim=8, n_positions=128)
    register_adapter(ArchitectureAdapter("gptj", ("gptj",), ("transformer.h",), "mlp.fc_out"))
    model = workbench.from_hf(transformers.GPTJForCausalLM(config), tiny_tokenizer)
    assert model.d_mlp == 80
    stats = collect(model, ["hello there"], progress=False)
    assert stats.mean.shape == (2, 80)


def test_load_model_from_local_folder(tmp_path, tiny_tokenizer):
    make_tiny_hf("qwen2").save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    model = workbench.load_model(str(tmp_path), dtype="float32", device="cpu")
    assert model.source == "local"
    assert model.architecture == "Qwen2ForCausalLM"
    assert model.dtype == torch.float32
    assert model.tokenizer.chat_template  # the template travels with the folder


def test_load_model_reports_missing_models_clearly(tmp_path):
    with pytest.raises(ModelLoadError, match="could not load"):
        workbench.load_model(str(tmp_path / "no-such-model"), device="cpu")
    with pytest.raises(ModelLoadError, match="does not exist"):
        workbench.load_model(str(tmp_path / "missing.gguf"), device="cpu")


def test_unknown_dtype_is_refused_before_loading():
    with pytest.raises(InvalidArgumentError, match="unknown dtype 'float33'"):
        workbench.load_model("smollm2-135m-instruct", dtype="float33")


def test_from_hf_gives_a_pad_token_and_eval_mode(tiny_tokenizer):
    hf = make_tiny_hf("gpt2").train()
    backend = Tokenizer.from_str(tiny_tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>")
    assert tokenizer.pad_token is None
    model = workbench.from_hf(hf, tokenizer)
    assert tokenizer.pad_token == "</s>"
    assert not model.hf_model.training


def test_encode_left_pads_with_mask_derived_positions(tiny_llama):
    prompting = tiny_llama.prompting(chat_template=False)
    inputs = tiny_llama.encode(["Hi", "How do I bake a cake?"], prompting)
    mask = inputs["attention_mask"]
    assert mask[0, 0] == 0 and mask[:, -1].all()  # left padding
    assert inputs["position_ids"][0, -1] == mask[0].sum() - 1
    assert inputs["position_ids"][1].tolist() == list(range(mask.shape[1]))
