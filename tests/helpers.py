"""Helpers shared by the tests: tiny model configs and builders, and a hook check.

Example:
    >>> from tests.helpers import make_tiny_hf
    >>> make_tiny_hf("llama").config.num_hidden_layers
    2
"""

from __future__ import annotations

import torch
import transformers

VOCAB = 512
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
               initializer_range=0.2, pad_token_id=0, bos_token_id=1, eos_token_id=2)

#: model_type -> (config class, model class, config kwargs)
TINY_ARCHITECTURES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", _COMMON),
    "mistral": ("MistralConfig", "MistralForCausalLM", _COMMON),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", _COMMON),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {**_COMMON, "head_dim": 16}),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", {**_COMMON, "head_dim": 16}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {**_COMMON, "head_dim": 16}),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM", {**_COMMON, "head_dim": 16}),
    # the multimodal wrapper: a vision tower beside the text model, whose blocks sit at
    # model.language_model.layers
    "gemma3": ("Gemma3Config", "Gemma3ForConditionalGeneration", dict(
        text_config={**_COMMON, "head_dim": 16},
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=8),
        mm_tokens_per_image=4, boi_token_index=5, eoi_token_index=6, image_token_index=7)),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", _COMMON),
    "olmo": ("OlmoConfig", "OlmoForCausalLM", _COMMON),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", _COMMON),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel",
             dict(vocab_size=VOCAB, n_embd=64, n_inner=96, n_layer=2, n_head=4, n_positions=128,
                  initializer_range=0.2, bos_token_id=1, eos_token_id=2)),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM",
                 {k: v for k, v in _COMMON.items() if k != "num_key_value_heads"}),
}

PROMPTS = ["How do I bake a cake?", "Hi", "Write code to sort a list in Python, please.",
           "Explain how to change a tire on a bicycle"]


def make_tiny_hf(model_type: str, seed: int = 0, **overrides) -> torch.nn.Module:
    """A tiny random-init model; ``overrides`` change its config (e.g. a longer context)."""
    config_name, model_name, kwargs = TINY_ARCHITECTURES[model_type]
    if "text_config" in kwargs:  # a multimodal wrapper: the overrides are its text model's
        kwargs = {**kwargs, "text_config": {**kwargs["text_config"], **overrides}}
        overrides = {}
    config = getattr(transformers, config_name)(**{**kwargs, **overrides})
    torch.manual_seed(seed)
    return getattr(transformers, model_name)(config).eval()


def hooks_left(module: torch.nn.Module) -> list[str]:
    """Names of submodules that still carry forward hooks of any kind."""
    return [name for name, sub in module.named_modules()
            if sub._forward_hooks or sub._forward_pre_hooks
            or getattr(sub, "_forward_hooks_with_kwargs", None)]


def pass_shapes(model, run) -> list[tuple[int, ...]]:
    """The ``input_ids`` shape of every whole-model pass that ``run()`` makes."""
    shapes: list[tuple[int, ...]] = []
    handle = model.hf_model.register_forward_pre_hook(
        lambda _m, _args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)),
        with_kwargs=True)
    try:
        run()
    finally:
        handle.remove()
    return shapes
