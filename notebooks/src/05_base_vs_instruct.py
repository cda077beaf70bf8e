# ---
# jupyter:
#   cna:
#     model: smollm2-135m-safety-late
#     wheels: [smollm2, gemma]
# ---

# %% [markdown]
# # 05 · Before and after alignment: where the circuit sits and what it does
#
# The paper finds that base models already contain late-layer neurons that separate harmful
# from benign requests, and that alignment turns that structure into a refusal gate. The
# workbench's teaching models make the same comparison at small scale: SmolLM2-135M-Instruct
# *before* and *after* the project's late-MLP safety tuning (a controlled variant, built so
# that refusal has a sparse gate), the same model after LoRA safety tuning on every linear
# layer (the counter-example: it refuses too, but through no gate CNA finds), and the base
# model gemma-3-270m. All four go through `workbench.compare.compare_models`: the same
# contrast, the same selection, then circuit location, overlap, steering and the
# lock-picking prompt.

# %% [markdown]
# **What the paper claims.** Circuits of base and instruct models share 8–29% of their
# (layer, neuron) pairs; they sit late (for Llama-3.2-1B, 87% of the top-200 neurons in the
# last three layers); in the instruct model the circuit gates refusal. Our design notes give
# these summary figures, not the paper's per-model table (Table 8), so only they are
# printed beside ours.
#
# **What we run.** `MODEL` is the model *after* late-MLP safety tuning; `BEFORE` is the same
# network before it (same shape, so their circuits can be overlapped neuron by neuron);
# `COUNTER` is the same network after LoRA safety tuning; `BASE` is a base model of another
# family (different shape: compared by location only). Circuits come from the JBB
# `discover` halves; the first three are steered on the held-out halves, with a random
# circuit as control.
#
# **What to look for.** Whether the circuits sit in the last layers in all four models; how
# much of the circuit survives each kind of safety tuning; whether ablating the circuit
# removes refusal after late-MLP tuning, after LoRA tuning, or neither. Both tuned models
# refuse; the lesson is when a sparse gate exists and how you would tell.

# %%
import pandas as pd
import plotly.express as px
import widgets
import workbench as wb
from workbench.compare import compare_models

pd.set_option("display.max_colwidth", 160)
# With hub models, the paper's own pair is e.g. MODEL = "meta-llama/Llama-3.2-1B-Instruct"
# with BEFORE = "meta-llama/Llama-3.2-1B" (its base model).
BEFORE = "smollm2-135m-instruct"  # MODEL before safety tuning
COUNTER = "smollm2-135m-safety"  # LoRA safety tuning: refusal spread over many neurons
BASE = "gemma-3-270m"              # a base model: no chat template, no alignment
N_DISCOVER = 10 if FAST else None  # prompts per discover JBB half (None: all 50)
N_HELDOUT = 4 if FAST else None    # prompts per held-out JBB half (None: all 50)
STRONGREJECT_N = 0 if FAST else 50  # StrongREJECT prompts in the steering sweep
MULTIPLIERS = (0.0, 1.0) if FAST else (0.0, 0.5, 1.0, 1.5, 2.0)
MAX_NEW_TOKENS = 16 if FAST else 48

loaded = {name: wb.load_model(name, device=DEVICE, dtype=DTYPE)
          for name in dict.fromkeys([BEFORE, MODEL, COUNTER, BASE])}
loaded

# %%
comparison = compare_models([loaded[BEFORE], loaded[MODEL], loaded[COUNTER], loaded[BASE]],
                            steered=3,
                            discover_n=N_DISCOVER, n=N_HELDOUT,
                            strongreject_n=STRONGREJECT_N,
                            multipliers=MULTIPLIERS, max_new_tokens=MAX_NEW_TOKENS)
before, after, counter, base = comparison.models

# %% [markdown]
# ### Where the circuits sit
#
# Share of each circuit in the last three layers, the last 10% and the last quarter of the
# model's layers, then the full per-layer distribution on a common depth axis (0 = first
# layer, 1 = last).

# %%
comparison.location_table()

# %%
layers = pd.DataFrame([{"model": m.name, "layer": layer, "neurons": n,
                        "depth": layer / (m.circuit.model["n_layers"] - 1)}
                       for m in comparison.models for layer, n in m.circuit.layer_counts().items()])
figure = px.bar(layers, x="depth", y="neurons", facet_row="model", hover_data=["layer"],
                range_x=[-0.05, 1.05], height=200 * layers["model"].nunique(),
                title="Circuit neurons per layer, by relative depth (0 = first layer, 1 = last)")
figure.update_traces(width=0.02).update_yaxes(matches=None)

# %% [markdown]
# ### Overlap of the pair (the Table 8 analogue)
#
# Before and after safety tuning the network has the same shape, so the circuits can be
# compared neuron by neuron: the untuned model, the late-MLP variant and the LoRA
# counter-example. Click a count in the diagram (or pick a region) to list its neurons with
# their scores in each circuit. The table below it is the pair (before, late-MLP) beside
# the paper's figures.

# %%
widgets.CircuitVenn([before.circuit, after.circuit, counter.circuit],
                    names=[f"{before.name} (before)", f"{after.name} (late MLP)",
                           f"{counter.name} (LoRA)"])

# %%
published = pd.DataFrame([
    {"what": "base vs instruct: shared (layer, neuron) pairs",
     "paper": "8-29% (range over models)"},
    {"what": "Llama-3.2-1B: top-200 neurons in the last 3 layers", "paper": "87%"},
])
display(comparison.overlap_table(), published)

# %% [markdown]
# ### Behaviour under steering
#
# Refusal rate on the held-out harmful and benign halves (and StrongREJECT) for the three
# SmolLM2 models, at each multiplier, for the CNA circuit and its random control. Multiplier 1 is the unchanged model for both,
# so it is run once, as the circuit's column at 1.

# %%
steering = comparison.steering_table()
steering.pivot_table(index=["model", "benchmark"], columns=["intervention", "multiplier"],
                     values="refusal_rate")

# %%
steering.pivot_table(index=["model", "benchmark"], columns=["intervention", "multiplier"],
                     values="quality")

# %%
comparison.lockpicking_table().pivot_table(index="model", columns="multiplier",
                                           values="completion", aggfunc="first")

# %% [markdown]
# ## What we found
#
#
# - **Location.** All three SmolLM2 circuits sit late: 96% of the untuned model's neurons in
#   the last 3 layers (39 of 46 in layer 29), 100% of the late-MLP variant's (43 in layer
#   29), 91% of the LoRA model's (36 in layer 29). The base model gemma-3-270m does not: its
#   37 neurons sit in layers 0 and 4 of 18 (an earlier run, of 2026-11-24 with older code
#   and versions, put them in layers 0, 1 and 3; we did not trace the difference). Without
#   a chat template the last-token contrast may be dominated by surface features of the raw
#   prompts; we did not investigate further.
# - **Overlap.** The late-MLP variant keeps 30 of the untuned model's 46 neurons (Jaccard
#   0.48, 65% of each circuit); the LoRA model keeps 21 (Jaccard 0.30). Both are above the
#   paper's 8–29% for base vs instruct, as expected: our "before" model is already an
#   instruct model. The late recipe changed only 64 neurons, picked by CNA on the untuned
#   model, so its circuit is close to the untuned one by construction.
# - **Behaviour.** Held-out harmful refusal at CNA ×0 / ×0.5 / ×1 / ×1.5 / ×2:
#   - late-MLP variant: **10% / 50% / 76% / 84% / 90%**; the random control stays at
#     68–74%. StrongREJECT: 16% at ×0, 80% unchanged, 92% at ×2 (random ×0: 78%).
#   - LoRA model: 90% / 90% / 94% / 94% / 92%; random ×0: 96%. StrongREJECT: 70% at ×0,
#     80% unchanged, 62% at ×2, but the random control at ×2 gives 58%.
#   - untuned model: 0–6% everywhere.
# - **Lock-picking.** The late variant answers at ×0 (about choosing a safe) and refuses at
#   ×1 and ×2. The LoRA model refuses at ×0 (in other words) and ×1, and answers at ×2. The
#   untuned model answers at all three; gemma writes runs of numbers.
# - **The lesson: when does a sparse gate exist, and how would you tell?** Both tuned
#   models refuse, and in both the harm-discriminating neurons sit late. Only in the model
#   whose tuning was confined to a few such neurons does scaling them move refusal, and it
#   moves it both ways, monotonically, far beyond a random circuit of the same shape. In
#   the LoRA model, refusal was written densely over every layer, and the same 46 neurons
#   do no more than random ones. So a gate shows as a dose-response beside a flat random
#   control, over the multiplier here and over circuit size in notebook 02. Two lines that
#   stay together mean the circuit, whatever it discriminates, is not where the behaviour
#   is decided. The refusal direction (`Intervention.direction`) then tells whether that
#   behaviour is linear at all. The late model's gate was planted by its recipe; the
#   paper's claim is that alignment plants one in real instruct models.
#
#
# ## Exercises
#
# 1. Transfer: apply the circuit discovered *before* tuning to the model *after* tuning
#    (`wb.generate(loaded[MODEL], prompts, circuit=before.circuit, multiplier=0)`) and
#    measure refusal on the held-out harmful half. Does the old circuit gate the new
#    refusal?
# 2. The base model has no chat template, so its prompts are raw text. Rediscover its
#    circuit with `top_k=200` and compare its location with the paper's 87% in the last
#    three layers.
# 3. Rank the shared neurons by their score in each circuit: did safety tuning strengthen
#    them (larger |δ| after) or leave them alone?
