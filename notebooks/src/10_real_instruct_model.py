# ---
# jupyter:
#   cna:
#     model: qwen2.5-coder-0.5b-instruct
#     wheels: [qwen05]
# ---

# %% [markdown]
# # 10 · CNA on a real instruct model
#
# Every other lesson runs on SmolLM2 models that this project tuned itself. This one runs
# on Qwen2.5-Coder-0.5B-Instruct, a real instruct model of the paper's family that nobody
# here touched. The paper's own setting misses its refusal gate; a contrast defined by the
# model's behaviour finds it; and the refusal-direction positive control is chosen the way
# Arditi et al. choose it. The full measurement, on this model and on the 1.5B, is
# `scripts/replicate_paper.py`'s; its committed results are read at the end.

# %% [markdown]
# **What the paper claims.** Ablating the 0.1% of MLP neurons that best separate harmful
# from benign JBB prompts cuts refusal by more than half (Qwen2.5-1.5B-Instruct 93% → 12%),
# while quality holds.
#
# **What we run.** Circuits from the JBB `discover` halves, measured on the `heldout`
# halves (other behaviours), at ×0 beside random circuits of the same shape:
# 1. the paper's contrast, JBB harmful vs JBB benign, at 0.1%, 1% and 2%;
# 2. the *refusal-filtered* contrast: the discover prompts the model refuses against the
#    benign prompts it answers (`filter_by_behaviour`), at the same sizes;
# 3. the refusal direction (Arditi et al. 2024), selected by what ablating each candidate
#    does on validation prompts, ablated everywhere.
#
# **What to look for.** Whether the CNA line leaves the random line, and at what size;
# what the contrast changes; whether the direction control removes refusal here.

# %%
import json
from pathlib import Path

import pandas as pd
import widgets
import workbench as wb
from workbench.evaluation import Intervention, load_benchmark, summary, sweep
from workbench.filtering import filter_by_behaviour

pd.set_option("display.max_colwidth", 120)
# The full measurement (all 50 held-out prompts, 48 tokens, sizes to 5%) is the script's,
# read at the end; the cells here use a sample, so that the notebook runs in minutes.
N_DISCOVER = 20 if FAST else None  # prompts per discover half (None: all 50)
N_HELDOUT = 6 if FAST else 25      # prompts of the held-out harmful half (None: all 50)
MAX_NEW_TOKENS = 16 if FAST else 32
SIZES = [0.01] if FAST else [0.001, 0.01, 0.02]  # shares of all MLP neurons
POSITIONS = 1 if FAST else 2  # last prompt positions the direction's selection tries

model = wb.load_model(MODEL, device=DEVICE, dtype=DTYPE)
print(model, f"{model.n_neurons:,} MLP neurons")
print(model.prompting().to_dict())

# %%
discover_sets = [load_benchmark(name, split="discover", n=N_DISCOVER)
                 for name in ("jbb-harmful", "jbb-benign")]
held_out = load_benchmark("jbb-harmful", split="heldout", n=N_HELDOUT)

# %% [markdown]
# ### 1 · The paper's setting: JBB harmful vs JBB benign
#
# One discovery at the largest size; each smaller circuit is its prefix.

# %%
jbb = wb.discover(model, *discover_sets, fraction=max(SIZES))
print(f"largest circuit: {len(jbb)} neurons; layers of the top 0.1%: "
      f"{jbb.top(0.001).layer_counts()}")
jbb_rows = sweep(model, [Intervention.baseline(), Intervention.cna(jbb, "cna:jbb-pair"),
                         Intervention.random(jbb, seed=0, name="random:jbb-pair")],
                 multipliers=[0.0], benchmarks=[held_out], sizes=SIZES,
                 max_new_tokens=MAX_NEW_TOKENS)
jbb_table = summary(jbb_rows)
jbb_table[["intervention", "size", "fraction", "multiplier", "n", "refusal_rate", "quality"]]

# %% [markdown]
# ### 2 · A contrast defined by behaviour: refused harmful vs answered benign
#
# This model refuses only about half of the JBB harmful prompts and a third of the benign
# ones. The JBB pair therefore mixes refused and answered prompts on both sides; the
# filtered pair contrasts refusal itself.

# %%
pair = filter_by_behaviour(model, *discover_sets)
print(pair.summary())
filtered = wb.discover(model, pair.positive, pair.negative, keep_if=pair,
                       fraction=max(SIZES), max_imbalance=None)
filtered_rows = sweep(model, [Intervention.baseline(),
                              Intervention.cna(filtered, "cna:refusal-filtered"),
                              Intervention.random(filtered, seed=0,
                                                  name="random:refusal-filtered")],
                      multipliers=[0.0], benchmarks=[held_out], sizes=SIZES,
                      max_new_tokens=MAX_NEW_TOKENS)
filtered_table = summary(filtered_rows)
filtered_table[["intervention", "size", "fraction", "multiplier", "n", "refusal_rate",
                "quality"]]

# %% [markdown]
# ### The size curve, both contrasts
#
# A gate shows as a CNA line falling far below its random line.

# %%
both = pd.concat([jbb_table, filtered_table[filtered_table["kind"] != "baseline"]],
                 ignore_index=True)
widgets.dose_response(both)

# %% [markdown]
# How many of the two circuits' neurons are the same, at each size:

# %%
pd.DataFrame([{"size": f"{s:.1%}", "neurons": len(jbb.top(s)),
               "shared": len(jbb.top(s).keys() & filtered.top(s).keys())} for s in SIZES])

# %% [markdown]
# ### 3 · The positive control: the refusal direction
#
# A difference of means in the residual stream (Arditi et al. 2024), from the same
# refused-vs-answered pair: candidates at every layer and the last post-instruction
# positions, chosen by what ablating each one does to refusal on validation prompts (every
# 4th prompt), under a limit on the KL divergence it causes on harmless prompts (see
# `workbench.direction`). Each candidate costs three forward passes, so the notebook tries
# the last `POSITIONS` positions; the script tries five.

# %%
found = wb.refusal_direction(model, pair.positive, pair.negative, positions=POSITIONS,
                             max_imbalance=None)
print(f"from {len(pair.positive)} refused vs {len(pair.negative)} answered prompts: layer "
      f"{found.layer}, position {found.position} ({found.criterion}; fallback "
      f"{found.fallback})")
table = found.candidate_table()
display(table.sort_values("ablation_score").head(8))
direction_rows = sweep(model, [Intervention.baseline(), Intervention.direction(found)],
                       multipliers=[0.0], benchmarks=[held_out],
                       max_new_tokens=MAX_NEW_TOKENS)
summary(direction_rows)[["intervention", "multiplier", "n", "refusal_rate", "quality"]]

# %% [markdown]
# ### The full measurement
#
# `scripts/replicate_paper.py` runs the whole protocol (sizes 0.1% to 5%, ×0 and ×2, CAA,
# the direction, benign over-refusal, StrongREJECT, MMLU, and the paper's in-sample
# 100 + 100 protocol) on both Qwen models and commits its results; these are they.

# %%
results = Path(wb.__file__).resolve().parents[1] / "results" / "replication"
for folder in sorted(results.glob("*/")):
    if not (folder / "summary.csv").is_file():
        continue
    table = pd.read_csv(folder / "summary.csv")
    split = table[(table["stage"] == "split")]
    print(folder.name, json.loads((folder / "run.json").read_text())["settings"]["sizes"])
    display(split.pivot_table(index=["fraction"], columns="intervention",
                              values="refusal_rate", dropna=False).round(2))

# %% [markdown]
# ## What we found
#
# On 25 held-out JBB harmful prompts, 32 new tokens (the committed run; the script's full
# measurement, 50 prompts × 48 tokens, is the table above and
# [replication.md](../docs/replication.md)); refusal at ×1 is 56%:
#
# | circuit (×0) | 0.1% (117) | 1% (1,167) | 2% (2,335) |
# |---|---|---|---|
# | CNA, JBB pair | 52% | 40% | 44% |
# | random, same shape | 56% | 56% | 52% |
# | CNA, refusal-filtered (23 refused vs 34 answered) | 52% | **4%** | 16% |
# | random, same shape | 60% | 60% | 48% |
#
# - **The paper's setting misses here.** The JBB-pair circuit removes a few refusals at
#   every size (56% → 40% at best), hardly more than a random circuit. This model refuses
#   only about half of the JBB harmful prompts and a third of the benign ones, so the pair
#   mixes refused and answered prompts on both sides.
# - **A contrast defined by behaviour finds the gate.** The refusal-filtered circuit at 1%
#   takes refusal from 56% to 4% with quality 1.00, while its random control stays at 60%.
#   The curve is not monotone: at 2% refusal comes back to 16% (the full measurement: 6% at
#   1%, 16% at 2%, 2% at 5%). The two circuits share about half their neurons (62 of 117
#   at 0.1%, 667 of 1,167 at 1%), so the gate lies in the neurons they do not share.
# - **The direction control cuts refusal, but not by 80%.** Selected Arditi et al.'s way
#   from the same filtered pair (2 positions × 24 layers here), it is layer 15 at the
#   second-to-last position, chosen after relaxing the induce filter (no candidate passed
#   all filters: `fallback True`). Ablated everywhere it takes refusal from 56% to 20%, a
#   64% cut; the full measurement (5 positions, 50 prompts) gives 56% → 30%.
# - **At 1.5B the paper's own setting works** (the script's table: 80% → 44% at 0.1% and
#   2% at 1%, random 80% and 76%). The last table shows the 1.5B results as committed when
#   this notebook ran; replication.md has the current ones, the filtered contrast included.
# - **Lesson.** Whether CNA's fixed recipe finds a model's gate depends on the model: on a
#   model that refuses only part of the harmful set, define the contrast by what the model
#   does, not by what the prompts are, and always keep the random control beside it.
#
#
# ## Exercises
#
# 1. Run this notebook with `MODEL = "qwen2.5-coder-1.5b-instruct"` (about three times
#    slower). Does the paper's setting find the gate there?
# 2. Amplify instead of ablating: `multipliers=[2.0]` on the benign held-out half. Does the
#    filtered circuit make the model refuse benign requests?
# 3. Keep only the positive-δ neurons: `Intervention.cna(filtered, signs="positive")`.
