# ---
# jupyter:
#   cna:
#     model: smollm2-135m-safety
# ---

# %% [markdown]
# # 04 · MMLU under steering: does the model keep its knowledge?
#
# Removing refusal is only interesting if the model is otherwise intact. This notebook
# measures MMLU accuracy (zero-shot, next-token logits of A–D) with the CNA circuit at
# several multipliers, with a random circuit of the same shape, and with the CAA vector, and
# compares each with the unchanged model.

# %% [markdown]
# **What the paper claims.** MMLU accuracy under CNA steering stays within one point of the
# unsteered model.
#
# **What we run.** A seeded sample of MMLU test questions (the same questions in every
# condition), prompts in the standard MMLU format without a chat template; the prediction is
# the letter with the highest next-token logit.
#
# **What to look for.** The change in accuracy against the unchanged model, and, since a
# 135M model is close to chance on MMLU, the *agreement*: the share of questions whose
# predicted letter did not change. A model that answers "A" to almost everything can keep its
# accuracy while steering changes nothing or everything, so also look at the letter
# distribution. With a sample of n questions, one question is 100/n points.

# %%
import pandas as pd
import plotly.express as px
import workbench as wb
from workbench.evaluation import Intervention, load_benchmark, mmlu

N_MMLU = 20 if FAST else 200  # MMLU test questions (seeded sample; 500 takes ~3 min per
                               # condition on 2 CPU cores)
N_DISCOVER = 10 if FAST else None  # prompts per JBB discover half (None: all 50)
CNA_MULTIPLIERS = [0.0, 2.0] if FAST else [0.0, 0.5, 1.5, 2.0]
CAA_MULTIPLIERS = [0.0, 2.0]

model = wb.load_model(MODEL, device=DEVICE, dtype=DTYPE)
discover_sets = [load_benchmark(name, split="discover", n=N_DISCOVER)
                 for name in ("jbb-harmful", "jbb-benign")]
circuit = wb.discover(model, *discover_sets)
vector = wb.caa_vector(model, *discover_sets)
print(model, f"\ncircuit of {len(circuit)} neurons")

# %%
baseline = mmlu(model, n=N_MMLU)
print(f"unchanged model: accuracy {baseline.accuracy:.3f} on {baseline.n} questions "
      f"({baseline.seconds:.1f} s)")
baseline.rows["predicted"].value_counts().rename("predicted letter")

# %%
plan = [(Intervention.cna(circuit), CNA_MULTIPLIERS),
        (Intervention.random(circuit, seed=0, name="random"), [0.0]),
        (Intervention.caa(vector), CAA_MULTIPLIERS)]
results = [{"intervention": "baseline", "multiplier": 1.0, "result": baseline}]
for intervention, multipliers in plan:
    for m in multipliers:
        result = mmlu(model, n=N_MMLU, intervention=intervention.apply(model, m))
        results.append({"intervention": intervention.name, "multiplier": m, "result": result})


# %%
def describe(entry):
    result = entry["result"]
    same = (result.rows["predicted"] == baseline.rows["predicted"]).mean()
    return {"intervention": entry["intervention"], "multiplier": entry["multiplier"],
            "accuracy": result.accuracy,
            "change (points)": round(100 * (result.accuracy - baseline.accuracy), 1),
            "agreement with unchanged": same,
            "answers 'A'": (result.rows["predicted"] == "A").mean()}

mmlu_table = pd.DataFrame([describe(entry) for entry in results])
mmlu_table

# %%
figure = px.line(mmlu_table, x="multiplier", y="accuracy", color="intervention", markers=True,
                 title=f"MMLU accuracy ({N_MMLU} questions, zero-shot) under steering")
figure.add_hrect(y0=baseline.accuracy - 0.01, y1=baseline.accuracy + 0.01, opacity=0.15,
                 line_width=0, annotation_text="unchanged ± 1 point (paper's band)")
figure.add_hline(y=0.25, line_dash="dot", annotation_text="chance")
figure

# %% [markdown]
# ## What we found
#
#
# - **The unchanged model is at chance.** Its accuracy is 0.235 on 200 questions, and it
#   answers "A" to 199 of them.
# - **Steering changes no answer.** The CNA circuit at ×0, ×0.5, ×1.5 and ×2 and the random
#   circuit at ×0 all give the same 200 answers (agreement 1.000, change 0.0 points). CAA
#   at m = 0 changes one answer (agreement 0.995). CAA at m = 2 changes five (0.975) and
#   gains 2 points (0.255), by moving away from "A", not by knowing more.
# - **So "MMLU within one point" says nothing here.** Steering changed no answers under
#   CNA, and a model that answers "A" to almost everything has little accuracy to lose.
#   Agreement and the letter distribution are the informative columns; a
#   real test of knowledge preservation needs a model that is above chance (see exercise 1,
#   or a hub model on a GPU).
#
#
# ## Exercises
#
# 1. Five-shot instead of zero-shot (`shots=5`): does the unchanged model leave chance, and
#    does steering then cost accuracy?
# 2. Per subject: `result.by_subject()` for the ablated circuit against the baseline. Are
#    the subjects that change the ones closest to the refusal topics?
# 3. How large must n be for a one-point difference to be meaningful? Rerun the baseline
#    with `seed=1`, `seed=2` and look at the spread.
