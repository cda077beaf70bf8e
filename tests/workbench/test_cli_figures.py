"""``cna figures``: a circuit's figures written to a folder, without Jupyter."""

from __future__ import annotations

import pytest

import workbench
from tests.helpers import make_tiny_hf
from widgets.export import chromium_path, read_html_provenance
from workbench.cli import main

POSITIVE = ["How do I pick a lock?", "How can I make a weapon at home?"]
NEGATIVE = ["How do I bake a cake?", "How can I plant a tree at home?"]


@pytest.fixture
def setup(tmp_path, tiny_tokenizer):
    """A tiny llama folder, prompt files, a circuit discovered from them and another one."""
    model_dir = tmp_path / "tiny-llama"
    make_tiny_hf("llama").save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    for name, prompts in (("pos", POSITIVE), ("neg", NEGATIVE)):
        (tmp_path / f"{name}.txt").write_text("\n".join(prompts) + "\n", encoding="utf-8")
    for name, k in (("a", 6), ("b", 4)):
        assert main(["discover", "--model", str(model_dir), "--positive",
                     str(tmp_path / "pos.txt"), "--negative", str(tmp_path / "neg.txt"),
                     "--no-universal", "--top-k", str(k), "--out",
                     str(tmp_path / f"{name}.json")]) == 0
    return tmp_path, model_dir


def test_without_a_model_the_circuit_map_and_venn_are_written(setup, capsys):
    root, _ = setup
    out = root / "figs"
    assert main(["figures", str(root / "a.json"), "--out", str(out), "--no-png",
                 "--compare", str(root / "b.json")]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["circuit.html", "venn.html"]
    record = read_html_provenance(out / "circuit.html")
    circuit = workbench.Circuit.load(root / "a.json")
    assert record["circuit"]["neurons"] == 6
    assert record["circuit"]["prompts"] == circuit.prompts
    assert "files in" in capsys.readouterr().out


def test_with_a_model_every_figure_is_written(setup, capsys):
    root, model_dir = setup
    out = root / "all"
    png = [] if chromium_path() is not None else ["--no-png"]
    status = main(["figures", str(root / "a.json"), "--out", str(out), "--model",
                   str(model_dir), "--positive", str(root / "pos.txt"), "--negative",
                   str(root / "neg.txt"), "--steer-prompt", "Hi", "--max-new-tokens", "6",
                   *png])
    assert status == 0, capsys.readouterr().err
    names = {p.name for p in out.iterdir()}
    stems = ["circuit", "heatmap", "tokens", "steering"]
    assert {f"{s}.html" for s in stems} <= names
    if not png:
        assert {f"{s}.png" for s in stems} <= names
    assert "cna-token" in (out / "tokens.html").read_text(encoding="utf-8")
    assert read_html_provenance(out / "steering.html")["multiplier"] == 0.0
    print(capsys.readouterr().out.splitlines()[-1])


def test_unknown_prompt_sets_are_reported_in_one_line(setup, capsys):
    root, model_dir = setup
    status = main(["figures", str(root / "a.json"), "--out", str(root / "x"), "--model",
                   str(model_dir), "--no-png"])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "pass --positive" in err and err.count("\n") == 1


def test_an_output_folder_that_is_a_file_is_refused_before_any_figure(setup, capsys):
    root, _ = setup
    (root / "taken").write_text("notes")
    status = main(["figures", str(root / "a.json"), "--out", str(root / "taken"), "--no-png"])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error:") and "--out" in err
    assert err.count("\n") == 1 and (root / "taken").read_text() == "notes"
