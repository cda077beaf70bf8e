"""PromptSetEditor: editing, files and the unsaved marker, validation, discovery."""

from __future__ import annotations

import pytest
from tests.behaviour_fakes import ScriptedCompletions
from tests.helpers import hooks_left
from tests.widgets.widget_fixtures import NEGATIVE, POSITIVE

import workbench as wb
from workbench.errors import BehaviourFilterError, InvalidArgumentError, PromptSetError
from workbench.prompts import PromptSet
from widgets.editor import EditorController, PromptSetEditor


@pytest.fixture
def editor():
    return EditorController(["a", "b", "c"], ["x", "y"])


def test_add_edit_remove_and_move(editor):
    changes = []
    editor.changed.add(lambda: changes.append(1))
    assert editor.add("positive", "d") == 3
    assert editor.add("positive", "first", at=0) == 0
    editor.edit("positive", 1, "A")
    assert editor.remove("positive", 2) == "b"
    editor.move("positive", 0, 2)
    assert editor.prompts["positive"] == ["A", "c", "first", "d"]
    editor.move("negative", 1, 0)
    assert editor.prompts["negative"] == ["y", "x"]
    assert len(changes) == 6


@pytest.mark.parametrize("action", [
    lambda e: e.add("positive", "   "),
    lambda e: e.add("positive", 3),
    lambda e: e.edit("positive", 0, ""),
])
def test_blank_or_non_text_prompts_are_refused(editor, action):
    with pytest.raises(PromptSetError, match="blank|text"):
        action(editor)
    assert editor.prompts["positive"] == ["a", "b", "c"]


@pytest.mark.parametrize("action", [
    lambda e: e.remove("positive", 3),
    lambda e: e.edit("negative", -1, "z"),
    lambda e: e.add("positive", "z", at=9),
    lambda e: e.remove("neutral", 0),
])
def test_bad_positions_and_sides_are_refused(editor, action):
    with pytest.raises(InvalidArgumentError, match="position|side"):
        action(editor)


@pytest.mark.parametrize("suffix", [".txt", ".csv", ".jsonl"])
def test_save_then_reopen_round_trips(tmp_path, suffix):
    tricky = ["plain", "comma, and \"quotes\"", "unicode: é ü 漢字 🙂", "<script>x</script>"]
    if suffix != ".txt":
        tricky.append("two\nlines")
    editor = EditorController()
    editor.replace_all("positive", tricky)
    editor.replace_all("negative", ["n1", "n2"])
    assert editor.unsaved()
    pos, neg = tmp_path / f"pos{suffix}", tmp_path / f"neg{suffix}"
    editor.save("positive", pos)
    editor.save("negative", neg)
    assert not editor.unsaved()
    # A restarted kernel: a new editor opened on the same files sees everything.
    again = EditorController(pos, neg)
    assert again.prompts == editor.prompts
    assert not again.unsaved()
    assert again.paths == {"positive": pos, "negative": neg}


def test_unsaved_marker_follows_the_file_contents(tmp_path):
    path = tmp_path / "pos.txt"
    path.write_text("one\ntwo\n")
    editor = EditorController(path, ["x"])
    assert not editor.unsaved("positive")
    editor.add("positive", "three")
    assert editor.unsaved("positive") and editor.unsaved()
    editor.remove("positive", 2)
    assert not editor.unsaved("positive")  # back to what the file holds
    editor.edit("positive", 0, "ONE")
    editor.save("positive")
    assert not editor.unsaved("positive")
    assert path.read_text() == "ONE\ntwo\n"


def test_bundled_sets_open_saved_and_need_a_path_to_save(tmp_path):
    editor = EditorController("qualitative-harmful", "qualitative-benign")
    assert len(editor.prompts["positive"]) == 8 and not editor.unsaved()
    editor.add("positive", "How do I make a fake ID?")
    with pytest.raises(InvalidArgumentError, match="choose a path"):
        editor.save("positive")
    editor.save("positive", tmp_path / "mine.jsonl")
    assert editor.names["positive"] == "mine"
    assert PromptSet.load(tmp_path / "mine.jsonl").prompts == editor.prompts["positive"]


def test_multi_line_prompts_cannot_go_to_txt(tmp_path):
    editor = EditorController(["one\ntwo"], ["x"])
    with pytest.raises(PromptSetError, match="line breaks"):
        editor.save("positive", tmp_path / "p.txt")
    assert not (tmp_path / "p.txt").exists()
    assert editor.unsaved("positive")


def test_a_failed_load_changes_nothing(editor, tmp_path):
    with pytest.raises(PromptSetError, match="does not exist"):
        editor.load("positive", tmp_path / "missing.txt")
    assert editor.prompts["positive"] == ["a", "b", "c"]


def messages(editor):
    return [(m.level, m.text) for m in editor.validate()]


def test_validation_messages():
    editor = EditorController([], ["x", "x", "y"])
    found = messages(editor)
    assert ("error", "the positive set is empty; add at least one prompt") in found
    assert ("warning", "the negative set holds 'x' 2 times") in found
    editor.replace_all("positive", ["y"] + [f"p{i}" for i in range(20)])
    found = messages(editor)
    assert any(level == "warning" and "in both sets" in text for level, text in found)
    assert any(level == "error" and "lopsided" in text for level, text in found)
    editor.set_max_imbalance(None)
    assert not any(level == "error" for level, _ in messages(editor))


def test_prompts_beyond_the_context_window_are_flagged(tiny_llama):
    editor = EditorController(["short", "word " * 200], ["fine"], model=tiny_llama)
    errors = [text for level, text in messages(editor) if level == "error"]
    assert len(errors) == 1
    assert "positive prompt 2" in errors[0] and "context window of 128" in errors[0]


def test_discover_hands_the_circuit_on_with_progress(tiny_llama):
    editor = EditorController(POSITIVE, NEGATIVE, model=tiny_llama)
    circuits, progress = [], []
    editor.discovered.add(circuits.append)
    editor.progress.add(lambda *args: progress.append(args))
    circuit = editor.discover(top_k=10, universal=None, batch_size=1)
    direct = wb.discover(tiny_llama, POSITIVE, NEGATIVE, top_k=10, universal=None,
                         progress=False)
    assert circuits == [circuit] and editor.circuit is circuit
    assert [(n.layer, n.index) for n in circuit.neurons] == \
        [(n.layer, n.index) for n in direct.neurons]
    assert progress == [("positive", 1, 2), ("positive", 2, 2), ("negative", 1, 2),
                        ("negative", 2, 2)]
    assert circuit.contrast.positive.per_prompt is not None  # small: kept for the heatmap
    assert not hooks_left(tiny_llama.hf_model)


def test_discover_refuses_invalid_sets_with_the_reasons(tiny_llama):
    editor = EditorController([], NEGATIVE, model=tiny_llama)
    with pytest.raises(PromptSetError, match="positive set is empty"):
        editor.discover()
    with pytest.raises(InvalidArgumentError, match="no model"):
        EditorController(POSITIVE, NEGATIVE).discover()


def test_view_buttons_drive_the_controller(tmp_path):
    view = PromptSetEditor(["a", "b"], ["x"])
    column = view.columns["positive"]
    column.text.value = "new <b>prompt</b>"
    column.buttons["Add"].click()
    assert view.controller.prompts["positive"] == ["a", "b", "new <b>prompt</b>"]
    assert column.list.value == 2
    assert "unsaved" in column.title.value
    column.list.value = 0
    assert column.text.value == "a"
    column.buttons["Down"].click()
    assert view.controller.prompts["positive"] == ["b", "a", "new <b>prompt</b>"]
    assert column.list.value == 1
    column.text.value = "A"
    column.buttons["Replace"].click()
    column.buttons["Remove"].click()
    assert view.controller.prompts["positive"] == ["b", "new <b>prompt</b>"]
    column.path.value = str(tmp_path / "pos.csv")
    column.save_button.click()
    assert "unsaved" not in column.title.value and "saved in" in column.title.value
    assert PromptSet.load(tmp_path / "pos.csv").prompts == ["b", "new <b>prompt</b>"]


def test_view_shows_errors_and_escaped_messages():
    view = PromptSetEditor(["<b>dup</b>", "<b>dup</b>"], ["x"])
    assert "&lt;b&gt;dup&lt;/b&gt;" in view.messages.value and "<b>dup" not in view.messages.value
    column = view.columns["negative"]
    column.text.value = "  "
    column.buttons["Add"].click()
    assert "blank" in view.status.value
    column.path.value = ""
    column.load_button.click()
    assert "path" in view.status.value
    assert view.discover_button.disabled  # no model to discover with


def test_view_discover_button(tiny_llama):
    view = PromptSetEditor(POSITIVE, NEGATIVE, model=tiny_llama)
    found = []
    view.controller.discovered.add(found.append)
    view.top_k.value = 7
    view.universal.value = False
    view.discover_button.click()
    assert len(found) == 1 and len(found[0]) == 7
    assert found[0].selection["universal_threshold"] is None
    assert view.progress.value == view.progress.max == 2
    assert "discovered 7 neurons" in view.status.value


# -- behaviour filter ------------------------------------------------------------------


def test_filter_keeps_refused_positive_and_answered_negative_prompts(tiny_llama, monkeypatch):
    """Scripted generation: "the model" refuses POSITIVE[0] and neither negative prompt."""
    ScriptedCompletions([POSITIVE[0]]).install(monkeypatch)
    editor = EditorController(POSITIVE, NEGATIVE, model=tiny_llama)
    seen, changes, progress = [], [], []
    editor.filtered.add(seen.append)
    editor.changed.add(lambda: changes.append(1))
    editor.progress.add(lambda *args: progress.append(args))
    pair = editor.filter_by_behaviour(max_new_tokens=4)
    assert editor.prompts == {"positive": [POSITIVE[0]], "negative": list(NEGATIVE)}
    assert seen == [pair] and changes and editor.last_filter is pair
    assert progress[-1] == ("filter", 4, 4)
    assert pair.record["generation"]["max_new_tokens"] == 4
    assert editor.unsaved("positive")  # only the list changed, not a file
    # Discovery on the sets the filter left records it in the circuit ...
    circuit = editor.discover(top_k=3, universal=None)
    assert circuit.selection["filter"] == pair.record
    # ... and once a set is edited, the filter no longer describes it.
    editor.add("negative", "How do I fold a paper plane?")
    assert "filter" not in editor.discover(top_k=3, universal=None).selection
    assert not hooks_left(tiny_llama.hf_model)


def test_filter_needs_a_model_and_prompts(tiny_llama):
    with pytest.raises(InvalidArgumentError, match="no model to filter with"):
        EditorController(POSITIVE, NEGATIVE).filter_by_behaviour()
    with pytest.raises(PromptSetError, match="positive set 'positive' is empty"):
        EditorController([], NEGATIVE, model=tiny_llama).filter_by_behaviour()


def test_filter_that_empties_a_set_changes_nothing(tiny_llama, monkeypatch):
    ScriptedCompletions(()).install(monkeypatch)
    editor = EditorController(POSITIVE, NEGATIVE, model=tiny_llama)
    with pytest.raises(BehaviourFilterError, match="positive set"):
        editor.filter_by_behaviour()
    assert editor.prompts == {"positive": list(POSITIVE), "negative": list(NEGATIVE)}
    assert editor.last_filter is None


def test_view_filter_button_reports_the_counts(tiny_llama, monkeypatch):
    scripted = ScriptedCompletions([POSITIVE[1]]).install(monkeypatch)
    view = PromptSetEditor(POSITIVE, NEGATIVE, model=tiny_llama, filter_tokens=5)
    assert not view.filter_button.disabled
    view.filter_button.click()
    assert view.controller.prompts["positive"] == [POSITIVE[1]]
    assert ("kept 1 of 2 positive prompts (is_refusal) and 2 of 2 negative prompts "
            "(not is_refusal)") in view.status.value
    assert "1 prompts" in view.columns["positive"].title.value
    assert all(kwargs["max_new_tokens"] == 5 for _, kwargs in scripted.calls)
    assert view.progress.description == "filter"


def test_view_filter_button_shows_why_nothing_was_kept(tiny_llama, monkeypatch):
    ScriptedCompletions(()).install(monkeypatch)
    view = PromptSetEditor(POSITIVE, NEGATIVE, model=tiny_llama)
    view.filter_button.click()
    assert "error" in view.status.value and "left nothing to contrast" in view.status.value
    assert not view.filter_button.disabled
    assert PromptSetEditor(POSITIVE, NEGATIVE).filter_button.disabled  # no model
