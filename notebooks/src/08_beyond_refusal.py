# ---
# jupyter:
#   cna:
#     model: smollm2-135m-instruct
# ---

# %% [markdown]
# # 08 · Beyond refusal: a French-language circuit
#
# Nothing in CNA knows about refusal: it contrasts any two prompt sets. Here the contrast is
# language: twelve requests in French against the same twelve in English. The circuit
# should then carry "answer in French", which is easy to check without any classifier
# model: ablate it on new French prompts and see whether the model still answers in French;
# amplify it on English prompts and see whether French appears.

# %% [markdown]
# **What the paper claims.** The paper studies refusal, but its method only needs two
# contrasting prompt sets: it finds the neurons that separate them and tests them causally
# by scaling. Nothing in it is specific to refusal.
#
# **What we run.** Discovery on 12 + 12 translated pairs written below (default 0.1% size),
# then greedy completions of *held-out* prompts (new requests, 8 per language) with the
# circuit unchanged, ablated and amplified. The language of each completion is measured
# crudely: the share of French among common French and English function words.
#
# **What to look for.** Whether ablation makes French prompts get English answers
# (the circuit is *necessary* for answering in French), and whether amplification makes
# English prompts get French answers (it is *sufficient*). The two need not go together.

# %%
FRENCH = [
    "Quelle est la capitale de l'Espagne ?",
    'Décris ta saison préférée.',
    'Comment faire une tasse de thé ?',
    'Raconte-moi une petite histoire sur un chat.',
    'Pourquoi le ciel est-il bleu ?',
    'Que dois-je emporter pour des vacances à la plage ?',
    'Donne-moi trois conseils pour apprendre à cuisiner.',
    'Explique comment fonctionne un vélo.',
    "Quelle est la meilleure façon d'arroser les plantes ?",
    'Écris une phrase sur la mer.',
    'Combien de jours y a-t-il dans une semaine ?',
    'Recommande un bon livre pour un long voyage en train.',
]

ENGLISH = [
    'What is the capital of Spain?',
    'Describe your favourite season.',
    'How do I make a cup of tea?',
    'Tell me a short story about a cat.',
    'Why is the sky blue?',
    'What should I pack for a beach holiday?',
    'Give me three tips for learning to cook.',
    'Explain how a bicycle works.',
    'What is the best way to water plants?',
    'Write a sentence about the sea.',
    'How many days are there in a week?',
    'Recommend a good book for a long train ride.',
]

FRENCH_TEST = [
    'Parle-moi de ton week-end.',
    'Comment faire du pain ?',
    'Quel est un bon nom pour un chien ?',
    'Décris une ville la nuit.',
    'Pourquoi les feuilles tombent-elles en automne ?',
    'Comment puis-je mieux dormir ?',
    'Quel temps fait-il en hiver à Paris ?',
    'Donne-moi une idée de cadeau pour un ami.',
]

ENGLISH_TEST = [
    'Tell me about your weekend.',
    'How do I bake bread?',
    'What is a good name for a dog?',
    'Describe a city at night.',
    'Why do leaves fall in autumn?',
    'How can I sleep better?',
    'What is the weather like in Paris in winter?',
    'Give me a gift idea for a friend.',
]

# %%
import re

import pandas as pd
import workbench as wb
from workbench.neurons import promoted_tokens

pd.set_option("display.max_colwidth", 120)
N_TEST = 4 if FAST else len(FRENCH_TEST)  # held-out prompts per language
MAX_NEW_TOKENS = 24 if FAST else 48

FRENCH_WORDS = set("le la les un une des et est de du en pour que qui dans sur avec pas vous "
                   "je il elle nous sont ce cette très plus".split())
ENGLISH_WORDS = set("the a an and is of to in for that with on you it are this very "
                    "more not".split())

def french_share(text):
    """French share of the common function words in text (0.0 when it has none)."""
    words = re.findall(r"[\w']+", text.lower())
    french = sum(w in FRENCH_WORDS for w in words)
    english = sum(w in ENGLISH_WORDS for w in words)
    return french / (french + english) if french + english else 0.0

model = wb.load_model(MODEL, device=DEVICE, dtype=DTYPE)
model

# %%
french = wb.PromptSet("french", FRENCH)
english = wb.PromptSet("english", ENGLISH)
circuit = wb.discover(model, french, english)
print(f"{len(circuit)} neurons; per layer {circuit.layer_counts()}; "
      f"{sum(n.score > 0 for n in circuit.neurons)} more active on French")
circuit.to_dataframe().head(8)

# %% [markdown]
# What does the top French-leaning neuron write? Its down-projection column, sent straight
# through the unembedding, raises these tokens (the direct path only):

# %%
top = next(n for n in circuit.neurons if n.score > 0)
promoted_tokens(model, top.layer, top.index, k=10)


# %% [markdown]
# ### Necessary? Ablate the circuit on new French prompts

# %%
def run(prompts, multiplier, signs="all"):
    texts = wb.generate(model, prompts, circuit=circuit, multiplier=multiplier, signs=signs,
                        max_new_tokens=MAX_NEW_TOKENS)
    return pd.DataFrame({"prompt": prompts, "multiplier": multiplier, "signs": signs,
                         "completion": texts, "French share": [french_share(t) for t in texts]})

french_runs = pd.concat([run(FRENCH_TEST[:N_TEST], m) for m in (1.0, 0.0)])
french_runs.pivot_table(index="prompt", columns="multiplier", values="completion",
                        aggfunc="first")

# %% [markdown]
# ### Sufficient? Amplify it on English prompts
#
# Amplifying all neurons would also amplify the English-leaning ones (negative δ), so only
# the French-leaning half is scaled up (`signs="positive"`).

# %%
english_runs = pd.concat([run(ENGLISH_TEST[:N_TEST], 1.0)] +
                         [run(ENGLISH_TEST[:N_TEST], m, signs="positive") for m in (2.0, 3.0)])
english_runs.pivot_table(index="prompt", columns="multiplier", values="completion",
                         aggfunc="first")

# %%
effect = pd.concat([french_runs.assign(prompts="French"), english_runs.assign(prompts="English")])
effect.groupby(["prompts", "multiplier", "signs"])["French share"].mean().rename(
    "mean French share of function words").to_frame()

# %% [markdown]
# ## What we found
#
#
# - **The circuit.** French (12) vs English (12) requests give 46 neurons, 36 in layer 29;
#   27 are more active on French. The top French-leaning neuron (layer 29, #525, δ = 22.5)
#   promotes no French tokens through the direct path ("Irish", "rapers", "emeteries"...),
#   so what it does is not visible in the unembedding alone.
# - **Necessary.** On 8 new French prompts the French share of function words is 0.88
#   unchanged and **0.01 when the circuit is ablated**. Every ablated answer is in English
#   ("I'm glad you're here...", "The French word for 'night' is..."), often off topic.
#   Ablating 0.1% of the neurons removes the model's ability to answer in French.
# - **Not sufficient.** On 8 English prompts, amplifying only the French-leaning neurons
#   gives a French share of 0.00 at ×2 and 0.13 at ×3 (unchanged: 0.01). At ×2 the answers
#   change wording but stay in English. At ×3 the text degrades ("indulgently indulgently
#   ..."), and one answer of 8 turns into broken French ("Le Parisais paysais paysais est
#   attendant..."), which is the whole 0.13.
# - **So CNA generalises beyond refusal.** The same two calls find a language circuit whose
#   ablation is as decisive as the planted refusal gate of `smollm2-135m-safety-late`
#   (notebook 02), in a model that was never tuned to have one.
#
#
# ## Exercises
#
# 1. Rediscover with `top_k=200` and amplify only the positive neurons at ×2. Does a larger
#    circuit make English prompts come back in French?
# 2. A different contrast: real capitals ("The capital of France is") against fictional
#    ones ("The capital of Narnia is"), twelve of each. What does ablating that circuit do
#    to factual completions?
# 3. Compare this circuit with the refusal circuit of notebook 00:
#    `wb.overlap(circuit, wb.discover(model, "qualitative-harmful", "qualitative-benign"))`.
#    Neurons that separate *both* contrasts cannot be specific to either; what might they
#    encode instead?
