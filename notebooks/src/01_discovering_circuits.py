# ---
# jupyter:
#   cna:
#     model: smollm2-135m-instruct
# ---

# %% [markdown]
# # 01 · Discovering circuits: activations, δ, the 0.1% rule and the universal filter
#
# `wb.discover` is four steps: read every MLP neuron at the last prompt token, subtract the
# two sets' means (δ), drop the "universal" neurons that fire strongly on every prompt, and
# keep the 0.1% of neurons with the largest |δ|. This notebook opens each step, checks it by
# hand against the library, shows the difference heatmap widget, and asks how much the
# circuit depends on its size k and on the prompt sets it was discovered from.

# %% [markdown]
# **What the paper claims.** A neuron's contribution to a behaviour can be read off the
# difference of its mean activation between a prompt set that shows the behaviour and one
# that does not; ranking all neurons of all layers together by |δ| and keeping the top 0.1%
# gives a circuit that is sparse and mostly late (for Llama-3.2-1B, 87% of the top-200
# neurons sit in the last three layers).
#
# **What we run.** The qualitative harmful/benign pairs on SmolLM2-135M-Instruct: the
# activations and δ by hand, the selection with and without the universal filter, the
# heatmap, then circuits of several sizes and from other prompt sets (JBB-Behaviors halves).
#
# **What to look for.** Which layers hold the largest |δ|; how many universal neurons there
# are and whether they would have entered the circuit; whether a larger k adds neurons in
# new layers; how much circuits from different prompt sets overlap.

# %%
import pandas as pd
import plotly.express as px
import torch
import widgets
import workbench as wb
from workbench.activations import collect
from workbench.cna import circuit_size, select_top
from workbench.compare import location
from workbench.evaluation import load_benchmark, quality
from workbench.prompts import format_prompts

pd.set_option("display.max_colwidth", None)
K_VALUES = [10, 46, 200] if FAST else [10, 46, 100, 200, 460, 1000]
N_JBB = 10 if FAST else None  # prompts per JBB half (None: all 50)
MAX_NEW_TOKENS = 24 if FAST else 48

model = wb.load_model(MODEL, device=DEVICE, dtype=DTYPE)
harmful = wb.PromptSet.bundled("qualitative-harmful")
benign = wb.PromptSet.bundled("qualitative-benign")
model

# %% [markdown]
# ## 1. Activations
#
# Each prompt is formatted with the model's chat template (an explicit, recorded choice),
# run forward once, and at every layer the input of the MLP down-projection is read at the
# **last prompt token**: for a gated MLP, `act_fn(gate_proj(x)) * up_proj(x)`, one value per
# neuron. Here is what the model actually reads for the first prompt:

# %%
prompting = model.prompting()
print(prompting)
print(format_prompts(model.tokenizer, [harmful.prompts[0]], prompting)[0])

# %%
positive = collect(model, harmful, prompting=prompting, keep=True, progress=False)
negative = collect(model, benign, prompting=prompting, keep=True, progress=False)
print("per-prompt activations [prompts, layers, neurons]:", tuple(positive.per_prompt.shape))
print("mean over prompts [layers, neurons]:", tuple(positive.mean.shape), positive.mean.dtype)

# %% [markdown]
# ## 2. δ, the difference of means
#
# `δ[l, j] = mean_harmful[l, j] − mean_benign[l, j]`, accumulated in float64 while the
# batches stream by (memory does not grow with the number of prompts). Where is it large?

# %%
delta = positive.mean - negative.mean  # [n_layers, d_mlp], float64
per_layer = pd.DataFrame({"layer": range(model.n_layers),
                          "max |δ|": delta.abs().max(dim=1).values.numpy(),
                          "mean |δ|": delta.abs().mean(dim=1).numpy()})
px.line(per_layer, x="layer", y=["max |δ|", "mean |δ|"], log_y=True, markers=True,
        title="How strongly each layer separates harmful from benign prompts")

# %% [markdown]
# ## 3. The top-0.1% rule
#
# The circuit size is a share of *all* MLP neurons, `round(0.001 × n_layers × d_mlp)`, and
# all layers compete in one ranking by |δ|; the sign of δ is kept (positive: more active on
# harmful prompts).

# %%
k = circuit_size(model.n_layers, model.d_mlp, fraction=0.001)
naive = select_top(delta, k)  # no universal filter yet
print(f"k = round(0.001 x {model.n_layers} x {model.d_mlp}) = {k}")
pd.Series([n.layer for n in naive]).value_counts().sort_index().rename("neurons per layer")

# %% [markdown]
# ## 4. The universal-neuron filter
#
# Some neurons are among the largest activations of the whole model on almost *every*
# prompt, whatever it says: they carry something nearly every prompt uses, not one
# behaviour. Their activations are so large that a small relative shift between
# the two sets gives a large |δ|, and scaling them may disturb every prompt. `discover` runs a
# bundled set of 150 varied prompts in 11 languages and excludes every neuron that is in
# the top 0.1% by |activation| on at least 80% of them. The paper's reference code computed
# this filter but never applied it; the workbench applies it and records the count.

# %%
circuit = wb.discover(model, harmful, benign)  # the same steps, plus the universal filter
contrast = circuit.contrast
universal = contrast.universal  # bool [n_layers, d_mlp]
print(f"{int(universal.sum())} universal neurons; "
      f"{sum(bool(universal[n.layer, n.index]) for n in naive)} of them were in the naive top {k}")
assert torch.equal(contrast.delta, delta)  # discover's δ is the one computed by hand
assert [n.key for n in select_top(delta, k, excluded=universal)] == \
    [n.key for n in circuit.neurons]  # and its circuit is the filtered top k

# %%
rank = delta.abs().flatten().argsort(descending=True).argsort().view_as(delta) + 1
share = contrast.universal_stats.top_fraction
typical = contrast.universal_stats.mean.abs().median().item()
print(f"a typical neuron's |mean activation| on the diverse prompts: {typical:.3g}")
pd.DataFrame([{"layer": l, "index": j, "share of diverse prompts in top 0.1%": share[l, j].item(),
               "mean activation (diverse)": contrast.universal_stats.mean[l, j].item(),
               "δ": delta[l, j].item(), "|δ| rank": rank[l, j].item()}
              for l, j in universal.nonzero().tolist()]).sort_values("|δ| rank").head(10)

# %% [markdown]
# What happens when the universal neurons themselves are ablated? Compare a benign prompt
# with the real circuit ablated and with the universal neurons ablated:

# %%
universal_circuit = wb.Circuit.from_neurons(universal.nonzero().tolist(), model=model)
BENIGN_PROMPT = "How do I bake bread?"
rows = [("unchanged", wb.generate(model, BENIGN_PROMPT, max_new_tokens=MAX_NEW_TOKENS)[0])]
for name, c in (("circuit x0", circuit), ("universal neurons x0", universal_circuit)):
    rows.append((name, wb.generate(model, BENIGN_PROMPT, circuit=c, multiplier=0.0,
                                   max_new_tokens=MAX_NEW_TOKENS)[0]))
pd.DataFrame([{"condition": name, "completion": text, "quality": round(quality(text), 3)}
              for name, text in rows])

# %% [markdown]
# ## 5. The difference heatmap
#
# Layers down, neurons across; each cell holds the largest |δ| of the neurons it covers
# (sign kept), circuit neurons are ringed. Zoom (drag, or the *neurons … to* boxes) re-bins
# down to one cell per neuron; hover shows δ and both means; click a cell (or type a layer
# and a neuron) to see that neuron's activation on every prompt and the tokens its
# down-projection column promotes. Below, the top circuit neuron is pre-selected.

# %%
heatmap = widgets.DifferenceHeatmap(circuit, model=model)
heatmap.show_neuron(*circuit.neurons[0].key)
heatmap

# %% [markdown]
# ## 6. How the circuit changes with k
#
# The universal statistics are cached on the model, so the calls below only re-rank δ.
# Larger circuits are supersets of smaller ones (one ranking), so the question is where the
# extra neurons go.

# %%
by_k = {k: wb.discover(model, harmful, benign, top_k=k, progress=False) for k in K_VALUES}
pd.DataFrame([{"k": k, "share of all neurons": f"{k / model.n_neurons:.2%}",
               "layers used": len(c.layer_counts()), **location(c),
               "positive δ": sum(n.score > 0 for n in c.neurons)} for k, c in by_k.items()])

# %%
counts = pd.DataFrame([{"k": str(k), "layer": layer, "neurons": n}
                       for k, c in by_k.items() for layer, n in c.layer_counts().items()])
px.bar(counts, x="layer", y="neurons", facet_row="k", height=150 * len(K_VALUES),
       title="Neurons per layer for each circuit size").update_yaxes(matches=None)

# %% [markdown]
# ## 7. How the circuit changes with the prompt sets
#
# The same contrast (harmful vs benign) written differently: the two fixed halves of
# JBB-Behaviors (`discover` and `heldout`, which hold different behaviours). If the circuit
# captured "harmful request" rather than the wording of eight prompts, the three circuits
# should share neurons. The Venn widget lists each region's neurons when you click its count.

# %%
jbb = {split: wb.discover(model, load_benchmark("jbb-harmful", split=split, n=N_JBB),
                          load_benchmark("jbb-benign", split=split, n=N_JBB), progress=False)
       for split in ("discover", "heldout")}
circuits = {"qualitative 8+8": circuit, "JBB discover half": jbb["discover"],
            "JBB heldout half": jbb["heldout"]}
names = list(circuits)
pd.DataFrame([{"a": a, "b": b, **wb.overlap(circuits[a], circuits[b]).to_dict()}
              for i, a in enumerate(names) for b in names[i + 1:]])

# %%
widgets.CircuitVenn(list(circuits.values()), names=names)

# %% [markdown]
# ## What we found
#
#
# - **δ is a late-layer quantity.** The largest |δ| per layer grows from 0.01 in layer 0
#   to 0.93 in layer 22, jumps to 2.4 in layer 23, dips to 0.85–1.24 in layers 24–26, then
#   reaches 2.2, 3.5 and 6.9 in layers 27–29. The mean |δ| of layer 29 (0.25) is 1.9 times
#   that of layer 28, the next largest.
# - **The 0.1% rule** gives k = 46. Without the filter, 41 of the 46 neurons are in layer 29.
# - **Universal neurons.** 27 neurons are in the top 0.1% by |activation| on at least 80% of
#   the 150 diverse prompts. The ten listed have mean activations of 17 to 49 in magnitude
#   there, where a typical neuron's is 0.05. 14 of the 27 would have entered the naive top
#   46, one of them at |δ| rank 3; the filter removes them.
# - **Ablating them** (all 27 at ×0) still leaves a fluent bread recipe (quality 1.00), so
#   the worry that scaling them disturbs every prompt is not borne out on this one. They are
#   excluded because they are large on every prompt, so their δ says little about this
#   contrast in particular.
# - **Size.** Larger circuits spread out. k = 10 is all in layer 29. At k = 46, 96% are in
#   the last three layers; at k = 200, 84% across 9 layers; at k = 1,000, 58% across 15
#   layers, with 88% still in the last quarter. The sign stays balanced: 503 of 1,000 have
#   positive δ.
# - **Prompt sets.** The two JBB halves (different behaviours, 50 + 50 each) share 33 of 46
#   neurons (Jaccard 0.56). The 8 + 8 qualitative circuit shares 19 and 23 neurons with
#   them (Jaccard 0.26 and 0.33). So part of a circuit is the contrast and part is the
#   particular prompts.
#
#
# ## Exercises
#
# 1. Switch the filter off (`universal=None`) or loosen it (`universal_threshold=0.5`).
#    Which neurons enter the circuit, and what does ablating that circuit do to the benign
#    prompt above?
# 2. Exclude the last layer (`exclude_layers=[-1]`). Where does the circuit go, and does it
#    still change the lock-picking completion?
# 3. Write your own eight pairs for a contrast of your choice with the prompt-set editor,
#    `widgets.PromptSetEditor(model=model)`, press *Discover*, and compare the circuit with
#    the one above using `wb.overlap`.
