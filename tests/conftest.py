"""Shared fixtures: tiny random-init models for every adapter, and the embedded models.

The plain helpers behind them (configs, ``make_tiny_hf``, ``hooks_left``) live in
:mod:`tests.helpers`; tests import them from there.

Unit tests build each supported architecture from a small config (2 layers, width 64,
no downloads). Integration tests (marked ``integration``) use the embedded real models,
loaded once per session.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# `make test` runs two pytest-xdist workers. The universal statistics cache of this test
# run is made once, by the first process (a plain run, or xdist's controller), and
# inherited by the workers and the notebook kernels and command-line runs they start:
# shared by the tests, never the user's. Each worker's torch takes its share of the cores,
# so that two workers do not fight over them.
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if WORKER is None or "CNA_STATS_CACHE" not in os.environ:
    os.environ["CNA_STATS_CACHE"] = tempfile.mkdtemp(prefix="cna-stats-")
if WORKER is not None:
    _share = (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ["OMP_NUM_THREADS"] = str(max(1, _share))

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

import workbench
from tests.helpers import CHATML, PROMPTS, TINY_ARCHITECTURES, make_tiny_hf
from workbench.models import WorkbenchModel

if WORKER is not None:
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (any text encodes) with pad/bos/eos and a ChatML template."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(PROMPTS * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>",
                                   bos_token="<s>", eos_token="</s>")
    fast.chat_template = CHATML
    return fast


@pytest.fixture(params=sorted(TINY_ARCHITECTURES))
def tiny_model(request, tiny_tokenizer) -> WorkbenchModel:
    """One tiny random-init model per supported architecture."""
    return workbench.from_hf(make_tiny_hf(request.param), tiny_tokenizer,
                             name=f"tiny-{request.param}")


@pytest.fixture
def tiny_llama(tiny_tokenizer) -> WorkbenchModel:
    return workbench.from_hf(make_tiny_hf("llama"), tiny_tokenizer, name="tiny-llama")


@pytest.fixture(scope="session")
def smollm() -> WorkbenchModel:
    """The default embedded model (SmolLM2-135M-Instruct), loaded once per session."""
    return workbench.load_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def qwen05() -> WorkbenchModel:
    """The embedded Qwen2.5-Coder-0.5B-Instruct (a real instruct model), loaded once."""
    return workbench.load_model("qwen2.5-coder-0.5b-instruct")
