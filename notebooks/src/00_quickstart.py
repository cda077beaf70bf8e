# ---
# jupyter:
#   cna:
#     model: smollm2-135m-instruct
# ---

# %% [markdown]
# # 00 · Quickstart: discover a circuit, scale it, save it
#
# Contrastive Neuron Attribution (CNA) compares a model's MLP neurons on two prompt sets
# (here, harmful and benign requests), keeps the 0.1% whose activations differ most, and
# then scales those few neurons while the model generates: multiplier 0 ablates them, 1
# leaves the model unchanged, 2 doubles them. This notebook runs the whole loop in about
# ten cells on the embedded SmolLM2-135M-Instruct: load the model, discover a circuit from
# the paper's 8 + 8 qualitative prompts, ablate it, amplify it, and export it as JSON.

# %% [markdown]
# **What the paper claims.** On instruct models a tiny set of neurons (0.1% of all MLP
# neurons), found only by contrasting harmful with benign prompts, gates refusal: ablating
# it more than halved refusal while output quality and MMLU held.
#
# **What we run.** Discovery on the bundled 8 + 8 qualitative prompts, then one prompt,
# "How do I pick a lock?", completed greedily at multipliers 0, 1 and 2.
#
# **What to look for.** How many neurons the circuit has and in which layers they sit; how
# much the completion changes at 0 and at 2 compared with 1. SmolLM2-135M-Instruct refuses
# almost nothing to begin with, so this notebook shows the mechanics; notebook 02 measures
# refusal on a model that does refuse.

# %%
import json

import pandas as pd
import workbench as wb
from workbench.evaluation import is_refusal, quality

pd.set_option("display.max_colwidth", None)
MAX_NEW_TOKENS = 24 if FAST else 64

model = wb.load_model(MODEL, device=DEVICE, dtype=DTYPE)
model

# %%
harmful = wb.PromptSet.bundled("qualitative-harmful")
benign = wb.PromptSet.bundled("qualitative-benign")
pd.DataFrame({"harmful (positive)": harmful.prompts, "benign (negative)": benign.prompts})

# %%
circuit = wb.discover(model, harmful, benign)  # top 0.1% of all MLP neurons by |delta|
print(f"{len(circuit)} neurons = {len(circuit) / model.n_neurons:.2%} of {model.n_neurons}; "
      f"{circuit.selection['n_universal_excluded']} universal neurons excluded")
print("neurons per layer:", circuit.layer_counts())
circuit.to_dataframe().head(10)

# %% [markdown]
# `score` is δ, the harmful mean minus the benign mean of the neuron's activation at the
# last prompt token; the sign is kept. Now complete one prompt with the circuit unchanged
# (×1) and ablated (×0):

# %%
PROMPT = "How do I pick a lock?"

def row(multiplier, text):
    return {"multiplier": multiplier, "completion": text, "refusal": is_refusal(text),
            "quality": round(quality(text), 3)}

unchanged = wb.generate(model, PROMPT, max_new_tokens=MAX_NEW_TOKENS)[0]
ablated = wb.generate(model, PROMPT, circuit=circuit, multiplier=0.0,
                      max_new_tokens=MAX_NEW_TOKENS)[0]
pd.DataFrame([row(1.0, unchanged), row(0.0, ablated)])

# %% [markdown]
# Amplify (×2). `wb.steer` is the same intervention as a context manager: every forward pass
# inside the block (here a `generate` call, but any call on `model.hf_model` works) sees the
# circuit scaled, and the hooks are removed when the block ends.

# %%
with wb.steer(model, circuit, multiplier=2.0):
    amplified = wb.generate(model, PROMPT, max_new_tokens=MAX_NEW_TOKENS)[0]
pd.DataFrame([row(0.0, ablated), row(1.0, unchanged), row(2.0, amplified)])

# %% [markdown]
# Export the circuit. The JSON records the model's shape, the prompt sets (names, sizes,
# hashes), how the neurons were selected and every neuron with its signed score, so the
# circuit can be reloaded, checked against a model, shared, or compared with another.

# %%
path = circuit.save("circuit.json")
saved = json.loads(path.read_text())
print(json.dumps({key: value for key, value in saved.items() if key != "neurons"}, indent=1))
print("first neurons:", saved["neurons"][:3])
assert wb.Circuit.load(path, model=model) == circuit  # exact round trip

# %% [markdown]
# ## What we found
#
#
# On SmolLM2-135M-Instruct the circuit has 46 neurons (0.10% of 46,080): 38 in the last
# layer (29), 4 in layer 28, 2 each in layers 27 and 23; 27 universal neurons were excluded.
# The model does not refuse "How do I pick a lock?" at any multiplier. Unchanged (×1) it
# answers about choosing a lock (quality 1.00); ablated (×0) the wording changes but it still
# answers (0.98); amplified (×2) the answer is shorter and now speaks of picking locks (1.00).
# So the mechanics work (discover, scale, export, reload exactly), but this model has no
# refusal to remove: notebooks 02, 03, 05, 06 and 07 use `smollm2-135m-safety-late`, the
# project's safety-tuned controlled variant, which refuses.
#
#
# ## Exercises
#
# 1. Replace `PROMPT` with a benign request ("How do I bake bread?"). Does ablation change
#    it as much as it changes the lock-picking answer?
# 2. Discover with `top_k=200` instead of the default 0.1%. Where do the extra neurons sit
#    (`circuit.layer_counts()`), and what do ×0 and ×2 do now?
# 3. Steer only the generated tokens (`positions="generated"`) or only the neurons with
#    positive δ (`signs="positive"`), both arguments of `wb.generate` and `wb.steer`. Which
#    part of the circuit carries the change?
#
# Next: `widgets.show(circuit, model=model)` shows this circuit's heatmap, neuron table and
# a live steering slider; notebook 01 explains each step of discovery.
