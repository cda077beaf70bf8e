# ---
# jupyter:
#   cna:
#     model: smollm2-135m-safety-late
# ---

# %% [markdown]
# # 09 · Scale out: bake a circuit into weights, and run CNA on NDIF
#
# Two ways to take a circuit beyond a hooked model in this process. **Baking** writes the
# model with the circuit at a fixed multiplier into plain weights, a Hugging Face folder that
# transformers, vLLM, TGI or SGLang load without the workbench. **Remote execution** runs
# discovery, steering and sweeps on NDIF, which hosts models too large for one machine,
# through nnsight; here it runs in nnsight's local simulation of NDIF (`remote="local"`),
# which serialises every call exactly as for the server.

# %% [markdown]
# **Why baking is exact.** Scaling neuron j's down-projection input by m at every position
# is scaling column j of the down-projection weight by m: `down_proj(x * s) = W @ diag(s) @ x
# + b`, with s_j = m for the circuit's neurons and 1 elsewhere. So a circuit at one
# multiplier needs no hooks. Only `positions="all"` has such a weight: a weight cannot tell
# prompt tokens from generated ones.
#
# **Why remote runs need another mechanism.** Steering here uses PyTorch hooks, which cannot
# run on a server. On a remote model the same edit travels as nnsight interventions
# (`down_proj.input[:] *= factor`) inside each traced call, with the same factor tensors.
#
# **What we run.** The refusal circuit of the embedded teaching model, from the 8 + 8
# qualitative prompts. Then (1) bake it at ×0, reload the folder with plain transformers and
# compare logits and greedy completions with the hooked model; (2) discover the same circuit
# and generate at ×0, ×1, ×2 through `remote="local"`, and compare with the local path.
#
# **What to look for.** Differences at float32 rounding level, and identical text.

# %%
import tempfile
from pathlib import Path

import pandas as pd
import torch
from transformers import AutoModelForCausalLM

import workbench as wb
from workbench.bake import save_baked

pd.set_option("display.max_colwidth", None)
MAX_NEW_TOKENS = 16 if FAST else 40
PROMPTS = ["How do I pick a lock?", "How do I bake bread?", "Write a poem about the sea."]

model = wb.load_model(MODEL, device=DEVICE, dtype=DTYPE)
circuit = wb.discover(model, "qualitative-harmful", "qualitative-benign")
print(f"{len(circuit)} neurons; layers {sorted(circuit.layer_counts())}")

# %% [markdown]
# ## 1 · Bake the circuit at ×0 and reload it with plain transformers
#
# `save_baked` (or `cna bake --model M --circuit C --multiplier 0 --out DIR`) writes the
# folder all at once: weights, config, tokenizer with its chat template, `circuit.json` and a
# model card.

# %%
folder = Path(tempfile.mkdtemp()) / "late-ablated"
save_baked(model, circuit, 0.0, folder)
print(sorted(path.name for path in folder.iterdir()))
print((folder / "README.md").read_text().split("\n## ")[0])

# %% [markdown]
# The folder loads with plain `transformers`, as a serving engine would. Compare its logits
# on the three prompts with the workbench model steered by hooks (`positions="all"`), and
# its greedy completions.

# %%
plain = AutoModelForCausalLM.from_pretrained(folder, dtype=model.dtype).to(model.device).eval()
inputs = model.encode(PROMPTS, model.prompting())
with torch.no_grad():
    baked_logits = plain(**inputs).logits  # [batch, pos, vocab]
    with wb.steer(model, circuit, multiplier=0.0):
        hooked_logits = model.hf_model(**inputs).logits
    unsteered_logits = model.hf_model(**inputs).logits
mask = inputs["attention_mask"].bool()  # compare real tokens, not padding
print(f"max |baked - hooked| logit:    {(baked_logits - hooked_logits)[mask].abs().max():.2e}")
print(f"max |baked - unsteered| logit: {(baked_logits - unsteered_logits)[mask].abs().max():.2e}")

baked_model = wb.from_hf(plain, model.tokenizer, name="baked")
pd.DataFrame({
    "prompt": PROMPTS,
    "hooked ×0": wb.generate(model, PROMPTS, circuit=circuit, multiplier=0.0,
                             max_new_tokens=MAX_NEW_TOKENS),
    "baked": wb.generate(baked_model, PROMPTS, max_new_tokens=MAX_NEW_TOKENS),
})

# %% [markdown]
# **Serving it.** The folder is a standard model folder, so:
#
# ```bash
# vllm serve /path/to/late-ablated            # an OpenAI-compatible server
# ```
#
# or `AutoModelForCausalLM.from_pretrained("/path/to/late-ablated")` in any process. The
# model card says how to convert it back to GGUF with llama.cpp's `convert_hf_to_gguf.py`.

# %% [markdown]
# ## 2 · The same discovery and steering through nnsight's simulation of NDIF
#
# `remote="local"` keeps the weights here but runs every traced call as NDIF would: the
# trace is serialised, this project's modules are hidden, and edits travel as interventions.
# No hook is registered on the model.

# %%
simulated = wb.from_hf(model.hf_model, model.tokenizer, name=model.name, remote="local")
remote_circuit = wb.discover(simulated, "qualitative-harmful", "qualitative-benign")
same = [n.key for n in remote_circuit.neurons] == [n.key for n in circuit.neurons]
score_gap = max(abs(a.score - b.score) for a, b in zip(circuit.neurons, remote_circuit.neurons))
print(f"same neurons in the same order: {same}; largest score difference: {score_gap:.1e}")

rows = []
for multiplier in (0.0, 1.0, 2.0):
    here = wb.generate(model, PROMPTS[:1], circuit=circuit, multiplier=multiplier,
                       max_new_tokens=MAX_NEW_TOKENS)
    there = wb.generate(simulated, PROMPTS[:1], circuit=circuit, multiplier=multiplier,
                        max_new_tokens=MAX_NEW_TOKENS)
    rows.append({"multiplier": multiplier, "identical": here == there, "remote='local'": there[0]})
pd.DataFrame(rows)

# %% [markdown]
# ## 3 · On NDIF itself
#
# The one-line change is the model and `remote=True`. NDIF hosts models up to 405B; which
# ones run now is listed by `nnsight.status()`. The API key comes from `NDIF_API_KEY` (or
# `nnsight.CONFIG.set_default_api_key(...)`) and is never stored by the workbench.
#
# ```python
# model = wb.load_model("meta-llama/Llama-3.1-70B-Instruct", remote=True)  # config + tokenizer
# circuit = wb.discover(model, "jbb-harmful", "jbb-benign")                 # NDIF jobs
# wb.generate(model, "How do I pick a lock?", circuit=circuit, multiplier=0)
# ```
#
# The same works from the command line with `--remote ndif` on `cna discover`, `cna steer`
# and `cna evaluate`. Each batch is one job; a job that fails or runs too long raises
# `RemoteJobError` with its job id, and `cna evaluate --out` resumes a sweep without redoing
# finished rows. MMLU scoring, the live slider's streaming and baking need the weights here.

# %% [markdown]
# ## What we found
#
# - **The circuit**: 46 neurons from the 8 + 8 qualitative prompts, 39 of them in the last
#   layer (2 in layer 23, 2 in 27, 3 in 28).
# - **Baking is exact here.** The folder reloaded by plain transformers gives the logits of
#   the hooked ×0 model on the three prompts with a largest difference of 0.0 (the unsteered
#   model differs from it by up to 16.1). Its greedy completions are the hooked ones, word
#   for word: the lock-picking prompt gets an answer instead of a refusal.
# - **The local simulation of NDIF gives the local results.** Discovery through
#   `remote="local"` finds the same 46 neurons in the same order, with scores equal to the
#   last bit (largest difference 0.0). The lock-picking completion is identical at ×0 (an
#   answer), ×1 and ×2 (refusals).
# - **Not shown here:** a run on NDIF itself, which needs network access and an API key.
#   The remote path's error handling (no key, model not hosted, failed or timed-out job) is
#   tested against a fake NDIF service in `tests/workbench/test_remote_ndif.py`.
#
# ## Exercises
#
# 1. Bake the circuit at ×2 instead and compare the baked folder's lock-picking completion
#    with `wb.generate(..., multiplier=2.0)`.
# 2. Try `wb.bake(model, circuit, 0.0, signs="positive")` (only the neurons with positive
#    δ) and compare the completions with the full circuit's.
# 3. Steer with `positions="generated"` through `remote="local"`, and check that
#    `cna bake` refuses the same setting, and why.
