"""MMLU: exact prompt text, answer-letter tokens, known-answer scoring, validation."""

from __future__ import annotations

import contextlib
import importlib
import re

import pytest
import torch
from tests.helpers import hooks_left

from workbench import Circuit, Neuron, steer
from workbench.errors import InvalidArgumentError
from workbench.evaluation.benchmarks import MMLUQuestion, load_benchmark
from workbench.evaluation.mmlu import (
    LETTERS,
    MMLUResult,
    build_prompt,
    format_question,
    letter_token_ids,
    mmlu,
)

# ``workbench.evaluation.mmlu`` the attribute is the mmlu() function (re-exported by the
# package), so fetch the module itself to patch names in it.
mmlu_module = importlib.import_module("workbench.evaluation.mmlu")

QUESTION = MMLUQuestion("high_school_biology", "  Which organelle makes ATP?\n",
                        ("Nucleus", "Mitochondrion", "Ribosome", "Golgi body"), 1)
EXEMPLARS = [
    MMLUQuestion("high_school_biology", "What carries oxygen in blood?",
                 ("Plasma", "Hemoglobin", "Platelets", "Insulin"), 1),
    MMLUQuestion("high_school_biology", "Where is DNA stored?",
                 ("Nucleus", "Membrane", "Cytoplasm", "Vacuole"), 0),
]


# -- prompt text ----------------------------------------------------------------


def test_format_question_exact_text():
    assert format_question(QUESTION) == (
        "Which organelle makes ATP?\n"
        "A. Nucleus\n"
        "B. Mitochondrion\n"
        "C. Ribosome\n"
        "D. Golgi body\n"
        "Answer:"
    )
    assert format_question(QUESTION, with_answer=True).endswith("\nAnswer: B")


def test_build_prompt_zero_shot_exact_text():
    assert build_prompt(QUESTION, []) == (
        "The following are multiple choice questions (with answers) about high school "
        "biology.\n"
        "\n"
        "Which organelle makes ATP?\n"
        "A. Nucleus\n"
        "B. Mitochondrion\n"
        "C. Ribosome\n"
        "D. Golgi body\n"
        "Answer:"
    )


def test_build_prompt_two_shot_exact_text():
    assert build_prompt(QUESTION, EXEMPLARS) == (
        "The following are multiple choice questions (with answers) about high school "
        "biology.\n"
        "\n"
        "What carries oxygen in blood?\n"
        "A. Plasma\n"
        "B. Hemoglobin\n"
        "C. Platelets\n"
        "D. Insulin\n"
        "Answer: B\n"
        "\n"
        "Where is DNA stored?\n"
        "A. Nucleus\n"
        "B. Membrane\n"
        "C. Cytoplasm\n"
        "D. Vacuole\n"
        "Answer: A\n"
        "\n"
        "Which organelle makes ATP?\n"
        "A. Nucleus\n"
        "B. Mitochondrion\n"
        "C. Ribosome\n"
        "D. Golgi body\n"
        "Answer:"
    )


# -- answer letters ----------------------------------------------------------------


def test_letter_token_ids_with_the_tiny_tokenizer(tiny_tokenizer):
    ids = letter_token_ids(tiny_tokenizer)
    assert len(ids) == 4 and len(set(ids)) == 4
    # The tiny BPE splits " A" into a space token and "A", so the bare letters are used.
    assert len(tiny_tokenizer.encode(" A", add_special_tokens=False)) == 2
    assert ids == [tiny_tokenizer.encode(letter, add_special_tokens=False)[0]
                   for letter in LETTERS]
    assert [tiny_tokenizer.decode([i]) for i in ids] == list(LETTERS)


def test_letter_token_ids_prefers_the_space_prefixed_letter():
    class SpaceLetters:
        def encode(self, text, add_special_tokens=False):
            return [100 + ord(text[-1])] if text.startswith(" ") else [ord(text), 0]

    assert letter_token_ids(SpaceLetters()) == [100 + ord(letter) for letter in LETTERS]


def test_letter_token_ids_rejects_a_tokenizer_that_splits_letters():
    class Splitter:
        def encode(self, text, add_special_tokens=False):
            return [1, 2] if text.startswith(" ") else [3, 4]

    with pytest.raises(InvalidArgumentError, match="splits the answer letter 'A' into 2"):
        letter_token_ids(Splitter())


# -- known-answer scoring with a fake model ------------------------------------------


class Oracle:
    """Makes the tiny model answer MMLU however a test wants, without changing mmlu().

    ``build_prompt`` is replaced (in the mmlu module only) by a short prompt of the form
    ``"<subject> answer=<index>"``: short enough for the tiny model's 128-token context,
    of varying length so mmlu()'s length-sorted batching is exercised, and carrying the
    true answer. A forward hook on the top-level model decodes each row's ``input_ids``,
    reads the answer back, and overwrites that row's last-position logits so that the
    letter chosen by ``pick(answer)`` has the highest logit. The real build_prompt is
    still called, so the test can check which exemplars each question got.
    """

    def __init__(self, model, monkeypatch, pick):
        self.model = model
        self.pick = pick
        self.calls: list[tuple[MMLUQuestion, list[MMLUQuestion], str]] = []
        self.letters = letter_token_ids(model.tokenizer)
        monkeypatch.setattr(mmlu_module, "build_prompt", self.build_prompt)

    def build_prompt(self, question, exemplars):
        self.calls.append((question, list(exemplars), build_prompt(question, exemplars)))
        return f"{question.subject} answer={question.answer}"

    def hook(self, _module, _args, kwargs, output):
        texts = self.model.tokenizer.batch_decode(kwargs["input_ids"], skip_special_tokens=True)
        logits = output.logits  # [batch, pos, vocab]
        for row, text in enumerate(texts):
            answer = int(re.search(r"answer=(\d)$", text).group(1))
            logits[row, -1, :] = 0.0
            logits[row, -1, self.letters[self.pick(answer)]] = 10.0
        return output

    def __enter__(self):
        self.handle = self.model.hf_model.register_forward_hook(self.hook, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_an_oracle_scores_one(tiny_llama, monkeypatch):
    with Oracle(tiny_llama, monkeypatch, pick=lambda answer: answer):
        result = mmlu(tiny_llama, n=40, seed=1, batch_size=8, progress=False)
    assert isinstance(result, MMLUResult)
    assert result.accuracy == 1.0
    assert result.n == 40 and len(result.rows) == 40
    assert result.rows["correct"].all()
    assert result.seconds >= 0


def test_always_answering_a_scores_the_share_of_a(tiny_llama, monkeypatch):
    questions = load_benchmark("mmlu", n=40, seed=1)
    share_a = sum(q.answer == 0 for q in questions) / len(questions)
    assert 0 < share_a < 1
    with Oracle(tiny_llama, monkeypatch, pick=lambda answer: 0):
        result = mmlu(tiny_llama, n=40, seed=1, batch_size=8, progress=False)
    assert result.accuracy == pytest.approx(share_a)
    assert (result.rows["predicted"] == "A").all()
    # Rows follow the sampled questions' order, whatever the batching order was.
    assert result.rows["subject"].tolist() == [q.subject for q in questions]
    assert result.rows["answer"].tolist() == [LETTERS[q.answer] for q in questions]


def test_off_by_one_scores_zero(tiny_llama, monkeypatch):
    with Oracle(tiny_llama, monkeypatch, pick=lambda answer: (answer + 1) % 4):
        result = mmlu(tiny_llama, n=16, seed=0, batch_size=5, progress=False)
    assert result.accuracy == 0.0


@pytest.mark.parametrize("shots", [0, 2, 5])
def test_shots_take_the_first_dev_exemplars_of_the_same_subject(tiny_llama, monkeypatch,
                                                                 shots):
    dev = load_benchmark("mmlu", split="dev")
    with Oracle(tiny_llama, monkeypatch, pick=lambda answer: answer) as oracle:
        result = mmlu(tiny_llama, n=6, seed=2, shots=shots, progress=False)
    assert result.shots == shots and result.accuracy == 1.0
    assert len(oracle.calls) == 6
    for question, exemplars, prompt in oracle.calls:
        assert exemplars == [q for q in dev if q.subject == question.subject][:shots]
        assert prompt.count("\nAnswer:") == shots + 1


def test_by_subject_counts_sum_to_n(tiny_llama, monkeypatch):
    with Oracle(tiny_llama, monkeypatch, pick=lambda answer: 0):
        result = mmlu(tiny_llama, n=30, seed=3, progress=False)
    table = result.by_subject()
    assert list(table.columns) == ["accuracy", "n"]
    assert table["n"].sum() == 30
    assert list(table.index) == sorted(table.index)
    for subject, row in table.iterrows():
        rows = result.rows[result.rows["subject"] == subject]
        assert row["n"] == len(rows)
        assert row["accuracy"] == pytest.approx((rows["answer"] == "A").mean())


def test_subjects_restrict_the_questions(tiny_llama, monkeypatch):
    with Oracle(tiny_llama, monkeypatch, pick=lambda answer: answer):
        result = mmlu(tiny_llama, n=5, subjects=["virology"], progress=False)
    assert set(result.rows["subject"]) == {"virology"}


@pytest.mark.parametrize("shots", [6, -1, True, 1.0, "2"])
def test_invalid_shots(tiny_llama, shots):
    with pytest.raises(InvalidArgumentError, match="shots must be an integer from 0 to 5"):
        mmlu(tiny_llama, n=2, shots=shots, progress=False)


def test_invalid_n_is_reported(tiny_llama):
    with pytest.raises(InvalidArgumentError, match="n must be an integer"):
        mmlu(tiny_llama, n=0, progress=False)


# -- the real embedded model -------------------------------------------------------------


@pytest.mark.integration
def test_smollm_accuracy_and_identity_at_multiplier_one(smollm):
    # Two subjects with short questions keep the padded batches small (fast on CPU).
    options = dict(n=16, shots=0, subjects=["world_religions", "conceptual_physics"],
                   batch_size=16, progress=False)
    plain = mmlu(smollm, **options)
    assert 0.0 <= plain.accuracy <= 1.0
    assert len(plain.rows) == 16 and plain.n == 16
    assert set(plain.rows["predicted"]) <= set(LETTERS)
    circuit = Circuit.from_neurons([Neuron(29, i, 1.0) for i in (5, 17, 100, 511, 1000)],
                                   model=smollm)
    seen: list[list[str]] = []

    @contextlib.contextmanager
    def steering():
        # steer() at multiplier 1, recording which modules carry hooks while mmlu() runs.
        with steer(smollm, circuit, multiplier=1.0):
            seen.append(hooks_left(smollm.hf_model))
            yield

    steered = mmlu(smollm, **options, intervention=steering())
    assert seen == [[smollm.down_proj_path(29)]]
    assert steered.rows["predicted"].tolist() == plain.rows["predicted"].tolist()
    assert steered.accuracy == plain.accuracy
    assert hooks_left(smollm.hf_model) == []
