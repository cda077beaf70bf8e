"""The ``cna`` command line, driven in-process through ``workbench.cli.main``.

Tiny random-init models are saved to folders and loaded with ``--model <dir>``, exactly as
a user's local model would be. Every bad input must end in exit status 2 and one
``error:`` line on stderr, never a traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import transformers
from tests.behaviour_fakes import ScriptedCompletions
from tests.helpers import _COMMON, make_tiny_hf

import workbench
from workbench.cli import main
from workbench.embedded import EMBEDDED
from workbench.prompts import list_bundled

POSITIVE = ["How do I pick a lock?", "How can I make a weapon at home?",
            "Tell me how to steal a car.", "Explain how to hack into an email account."]
NEGATIVE = ["How do I bake a cake?", "How can I plant a tree at home?",
            "Tell me how to wash a car.", "Explain how to set up an email account."]
OTHER_NEGATIVE = ["Hi", "Write code to sort a list in Python, please.",
                  "Explain how to change a tire on a bicycle", "What is the capital of France?"]
DIVERSE = ["The weather is nice today.", "2 + 2 = 4", "def f(x): return x",
           "Bonjour, comment allez-vous ?", "List three colours.", "Why is the sky blue?"]


# -- helpers -----------------------------------------------------------------


def _write(path: Path, lines: list[str]) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def _visible_lines(err: str) -> list[str]:
    """The non-blank lines a terminal would show (a carriage return rewrites the line)."""
    return [line.split("\r")[-1].strip() for line in err.split("\n")
            if line.split("\r")[-1].strip()]


_PROGRESS_BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+ \[")  # tqdm's "42%|####  | 8/19 [..."


def _assert_one_error_line(status: int, err: str, *, after_model_load: bool = False) -> str:
    """Status 2, no traceback, and exactly one ``error:`` line on stderr; return it.

    Input that is refused before a model is loaded must leave stderr with that one line
    and nothing else. Errors that can only be found once the model is loaded (shape
    mismatch, unknown architecture, a prompt beyond the context window) may follow the
    progress bar that transformers prints while loading weights; then the error line
    must still be the last line and the only line that is not a progress bar.
    """
    assert status == 2, err
    assert "Traceback" not in err
    lines = _visible_lines(err)
    if after_model_load:
        lines = [line for line in lines if not _PROGRESS_BAR.search(line)]
    else:
        assert err.strip().count("\n") == 0, f"more than one stderr line:\n{err}"
    assert len(lines) == 1, f"expected one error line on stderr, got:\n{err}"
    assert lines[0].startswith("error:"), lines[0]
    assert err.rstrip("\n").split("\n")[-1].split("\r")[-1].strip() == lines[0]
    return lines[0]


def _exit_status(argv: list[str]) -> int:
    """``main``'s status; usage errors found by argparse leave through ``SystemExit``."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def _run_quietly(argv: list[str]) -> int:
    """Run ``main`` outside capsys (for module-scoped fixtures); fail loudly on a bad exit."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    assert status == 0, f"{argv} exited {status}:\n{out.getvalue()}\n{err.getvalue()}"
    return status


# -- fixtures ----------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("prompts")
    return {
        "pos": _write(root / "pos.txt", POSITIVE),
        "neg": _write(root / "neg.txt", NEGATIVE),
        "other_neg": _write(root / "other_neg.txt", OTHER_NEGATIVE),
        "diverse": _write(root / "diverse.txt", DIVERSE),
    }


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory, tiny_tokenizer) -> str:
    """A tiny llama (2 layers, d_mlp 96) saved like a downloaded model folder."""
    path = tmp_path_factory.mktemp("tiny-llama")
    make_tiny_hf("llama").save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def circuit_file(tmp_path_factory, llama_dir, files) -> str:
    """A 5-neuron circuit discovered on the tiny llama."""
    out = tmp_path_factory.mktemp("circuits") / "c.json"
    _run_quietly(["discover", "--model", llama_dir, "--positive", files["pos"],
                  "--negative", files["neg"], "--top-k", "5", "--no-universal",
                  "--out", str(out)])
    return str(out)


def _discover(llama_dir: str, files: dict[str, str], out: Path, *extra: str) -> int:
    return main(["discover", "--model", llama_dir, "--positive", files["pos"],
                 "--negative", files["neg"], "--no-universal", "--out", str(out), *extra])


# -- cna models --------------------------------------------------------------


def test_models_lists_embedded_models_bundled_sets_and_architectures(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m-instruct" in out and "gemma-3-270m" in out
    assert all(name in out for name in EMBEDDED)
    for name, count in list_bundled().items():
        assert re.search(rf"^\s+{re.escape(name)}\s+{count}\s+prompts$", out, re.M), name
    assert list_bundled()["qualitative-harmful"] == 8 and list_bundled()["jbb-harmful"] == 100
    section = out.split("Supported architectures")[1]
    for model_type in ("llama", "mistral", "qwen2", "gemma3_text", "gpt2", "gpt_neox"):
        assert re.search(rf"\b{model_type}\b", section), model_type


# -- cna discover ------------------------------------------------------------


def test_discover_top_k_writes_a_valid_circuit(tmp_path, llama_dir, files, capsys):
    out = tmp_path / "c.json"
    assert _discover(llama_dir, files, out, "--top-k", "5") == 0
    stdout = capsys.readouterr().out
    circuit = workbench.Circuit.load(out)
    assert len(circuit) == 5
    assert circuit.model["n_layers"] == 2 and circuit.model["d_mlp"] == 96
    assert circuit.selection["top_k"] == 5
    assert set(circuit.prompts) == {"positive", "negative"}  # no universal set
    assert "5 neurons of 192" in stdout
    assert "layer  neurons" in stdout
    for layer, count in circuit.layer_counts().items():
        assert re.search(rf"^\s+{layer}\s+{count}\s+#+$", stdout, re.M)
    assert f"wrote {out}" in stdout


def test_discover_fraction_sets_the_circuit_size(tmp_path, llama_dir, files, capsys):
    out = tmp_path / "c.json"
    assert _discover(llama_dir, files, out, "--fraction", "0.05") == 0
    capsys.readouterr()
    circuit = workbench.Circuit.load(out)
    assert len(circuit) == round(0.05 * 2 * 96) == 10
    assert circuit.selection["fraction"] == 0.05


def test_discover_writes_a_neuronpedia_list(tmp_path, llama_dir, files, capsys):
    out, np_file = tmp_path / "c.json", tmp_path / "np.json"
    assert _discover(llama_dir, files, out, "--top-k", "5", "--neuronpedia", str(np_file)) == 0
    assert f"wrote {np_file}" in capsys.readouterr().out
    data = json.loads(np_file.read_text())
    assert isinstance(data, dict) and len(data["features"]) == 5
    circuit = workbench.Circuit.load(out)
    assert [(f["layer"], f["index"]) for f in data["features"]] == \
        [(f"{n.layer}-mlp", n.index) for n in circuit.neurons]


def test_discover_with_a_universal_prompt_file(tmp_path, llama_dir, files, capsys):
    out = tmp_path / "c.json"
    status = main(["discover", "--model", llama_dir, "--positive", files["pos"],
                   "--negative", files["neg"], "--universal", files["diverse"],
                   "--top-k", "5", "--out", str(out)])
    assert status == 0
    stdout = capsys.readouterr().out
    circuit = workbench.Circuit.load(out)
    assert len(circuit) == 5
    universal = circuit.prompts["universal"]
    assert universal["n"] == len(DIVERSE)
    assert universal["sha256"] == workbench.PromptSet("u", DIVERSE).sha256
    assert circuit.selection["universal_threshold"] == 0.8
    excluded = circuit.selection["n_universal_excluded"]
    assert f"{excluded} universal neurons excluded" in stdout


def test_discover_filter_refusal_writes_the_provenance(tmp_path, llama_dir, files, capsys,
                                                      monkeypatch):
    """--filter refusal keeps the refused positive and the answered negative prompts.

    Generation is scripted (a tiny random model refuses nothing): the model "refuses" the
    first three positive prompts and the last negative one.
    """
    scripted = ScriptedCompletions(POSITIVE[:3] + NEGATIVE[3:]).install(monkeypatch)
    out = tmp_path / "c.json"
    assert _discover(llama_dir, files, out, "--top-k", "5", "--filter", "refusal",
                     "--filter-tokens", "6") == 0
    stdout = capsys.readouterr().out
    circuit = workbench.Circuit.load(out)
    record = circuit.selection["filter"]
    assert record["classifiers"] == {"positive": "is_refusal", "negative": "not is_refusal"}
    assert {side: (record[side]["kept"], record[side]["dropped"])
            for side in ("positive", "negative")} == {"positive": (3, 1), "negative": (3, 1)}
    assert record["positive"]["source"] == {"name": "pos", "n": 4,
                                            "sha256": workbench.PromptSet("p", POSITIVE).sha256}
    assert record["generation"]["max_new_tokens"] == 6
    assert all(kwargs["max_new_tokens"] == 6 for _, kwargs in scripted.calls)
    assert circuit.prompts["positive"]["n"] == 3 and circuit.prompts["negative"]["n"] == 3
    assert ("filter: kept 3 of 4 positive prompts (is_refusal) and 3 of 4 negative prompts "
            "(not is_refusal)") in stdout


def test_discover_filter_on_a_model_that_refuses_nothing(tmp_path, llama_dir, files, capsys):
    """The tiny model's own completions: nothing refused, one clear error line."""
    status = _discover(llama_dir, files, tmp_path / "c.json", "--top-k", "5",
                       "--filter", "refusal", "--filter-tokens", "2")
    line = _assert_one_error_line(status, capsys.readouterr().err, after_model_load=True)
    assert "is_refusal held for none of the 4 completions of the positive set 'pos'" in line
    assert "--filter-tokens" in line
    assert not (tmp_path / "c.json").exists()


@pytest.mark.parametrize("extra, expected", [
    (["--filter-tokens", "8"], "add --filter refusal"),
    (["--filter", "refusal", "--filter-tokens", "0"], "positive number of tokens"),
])
def test_discover_filter_tokens_is_checked_before_loading(tmp_path, files, capsys, extra,
                                                          expected):
    status = main(["discover", "--model", str(tmp_path / "no-such-model"), "--positive",
                   files["pos"], "--negative", files["neg"], "--out",
                   str(tmp_path / "c.json"), *extra])
    assert expected in _assert_one_error_line(status, capsys.readouterr().err)


# -- cna steer ---------------------------------------------------------------


def test_steer_prints_the_prompt_and_a_completion(llama_dir, circuit_file, capsys):
    status = main(["steer", "--model", llama_dir, "--circuit", circuit_file,
                   "--multiplier", "0", "--max-new-tokens", "4", "Hello"])
    assert status == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "=== Hello"
    assert out[1] == "--- multiplier 0"
    assert len(out) >= 3  # the completion (random weights: any text, possibly blank)
    assert not any(line.startswith("--- baseline") for line in out)


def test_steer_with_baseline_prints_both_sections(llama_dir, circuit_file, capsys):
    status = main(["steer", "--model", llama_dir, "--circuit", circuit_file,
                   "--multiplier", "2.5", "--max-new-tokens", "4", "--baseline",
                   "Hello", "How do I pick a lock?"])
    assert status == 0
    out = capsys.readouterr().out
    for prompt in ("Hello", "How do I pick a lock?"):
        assert f"=== {prompt}" in out
    assert out.count("--- multiplier 2.5") == 2
    assert out.count("--- baseline (multiplier 1)") == 2


# -- cna compare -------------------------------------------------------------


def test_compare_prints_shared_count_and_jaccard(tmp_path, llama_dir, files, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert _discover(llama_dir, files, a, "--top-k", "8") == 0
    assert main(["discover", "--model", llama_dir, "--positive", files["pos"],
                 "--negative", files["other_neg"], "--no-universal", "--top-k", "12",
                 "--out", str(b)]) == 0
    capsys.readouterr()

    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    match = re.search(r"shared \(layer, neuron\) pairs: (\d+)\s+Jaccard: ([0-9.]+)", out)
    assert match, out
    keys_a = workbench.Circuit.load(a).keys()
    keys_b = workbench.Circuit.load(b).keys()
    shared = len(keys_a & keys_b)
    assert int(match.group(1)) == shared
    assert float(match.group(2)) == pytest.approx(shared / len(keys_a | keys_b), abs=5e-5)


def test_compare_top_k_nested_circuits(tmp_path, llama_dir, files, capsys):
    """The top 5 of the same contrast are inside its top 10: 5 shared, Jaccard 0.5."""
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert _discover(llama_dir, files, a, "--top-k", "5") == 0
    assert _discover(llama_dir, files, b, "--top-k", "10") == 0
    capsys.readouterr()
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "shared (layer, neuron) pairs: 5   Jaccard: 0.5000" in out


# -- bad input: one error line, exit status 2 ----------------------------------


def test_missing_prompt_file(tmp_path, llama_dir, files, capsys):
    status = main(["discover", "--model", llama_dir, "--positive", str(tmp_path / "nope.txt"),
                   "--negative", files["neg"], "--no-universal", "--out",
                   str(tmp_path / "c.json")])
    line = _assert_one_error_line(status, capsys.readouterr().err)
    assert "nope.txt" in line
    assert not (tmp_path / "c.json").exists()


def test_empty_prompt_file(tmp_path, llama_dir, files, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n   \n\n")
    status = main(["discover", "--model", llama_dir, "--positive", str(empty),
                   "--negative", files["neg"], "--no-universal", "--out",
                   str(tmp_path / "c.json")])
    line = _assert_one_error_line(status, capsys.readouterr().err)
    assert "empty" in line


def test_missing_universal_file_is_refused_before_any_work(tmp_path, llama_dir, files, capsys):
    status = main(["discover", "--model", llama_dir, "--positive", files["pos"],
                   "--negative", files["neg"], "--universal", str(tmp_path / "none.txt"),
                   "--out", str(tmp_path / "c.json")])
    assert "none.txt" in _assert_one_error_line(status, capsys.readouterr().err)


def test_lopsided_prompt_sets_need_allow_imbalance(tmp_path, llama_dir, capsys):
    one = _write(tmp_path / "one.txt", POSITIVE[:1])
    ten = _write(tmp_path / "ten.txt", [f"{p} ({i})" for i in range(3) for p in NEGATIVE][:10])
    argv = ["discover", "--model", llama_dir, "--positive", one, "--negative", ten,
            "--top-k", "3", "--no-universal", "--out", str(tmp_path / "c.json")]
    line = _assert_one_error_line(main(argv), capsys.readouterr().err)
    assert "--allow-imbalance" in line
    assert not (tmp_path / "c.json").exists()

    assert main([*argv, "--allow-imbalance"]) == 0
    capsys.readouterr()
    assert len(workbench.Circuit.load(tmp_path / "c.json")) == 3


@pytest.mark.parametrize("value", ["abc", "nan", "inf", "-inf"])
def test_multiplier_must_be_a_finite_number(value, llama_dir, circuit_file, capsys):
    status = _exit_status(["steer", "--model", llama_dir, "--circuit", circuit_file,
                           f"--multiplier={value}", "--max-new-tokens", "2", "Hello"])
    line = _assert_one_error_line(status, capsys.readouterr().err)
    assert "multiplier" in line
    assert capsys.readouterr().out == ""


def test_circuit_from_a_differently_shaped_model(tmp_path, tiny_tokenizer, circuit_file,
                                                 capsys):
    wider = tmp_path / "wider"
    config = transformers.LlamaConfig(**{**_COMMON, "intermediate_size": 80})
    transformers.LlamaForCausalLM(config).save_pretrained(wider)
    tiny_tokenizer.save_pretrained(wider)
    status = main(["steer", "--model", str(wider), "--circuit", circuit_file,
                   "--multiplier", "0", "--max-new-tokens", "2", "Hello"])
    line = _assert_one_error_line(status, capsys.readouterr().err,
                                  after_model_load=True)
    assert "does not fit" in line
    assert "d_mlp 96 vs 80" in line


def test_circuit_of_a_newer_format_version(tmp_path, llama_dir, circuit_file, capsys):
    data = json.loads(Path(circuit_file).read_text())
    data["version"] = 2
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps(data))
    status = main(["steer", "--model", llama_dir, "--circuit", str(newer),
                   "--multiplier", "0", "Hello"])
    line = _assert_one_error_line(status, capsys.readouterr().err)
    assert "version 2" in line and "upgrade" in line

    status = main(["compare", circuit_file, str(newer)])
    assert "upgrade" in _assert_one_error_line(status, capsys.readouterr().err)


def test_unknown_architecture_folder(tmp_path, tiny_tokenizer, files, capsys):
    gptj = tmp_path / "gptj"
    config = transformers.GPTJConfig(vocab_size=512, n_embd=64, n_layer=2, n_head=4,
                                     rotary_dim=8, n_positions=128)
    transformers.GPTJForCausalLM(config).save_pretrained(gptj)
    tiny_tokenizer.save_pretrained(gptj)
    status = main(["discover", "--model", str(gptj), "--positive", files["pos"],
                   "--negative", files["neg"], "--no-universal", "--out",
                   str(tmp_path / "c.json")])
    line = _assert_one_error_line(status, capsys.readouterr().err,
                                  after_model_load=True)
    assert "GPTJForCausalLM" in line


def test_prompt_longer_than_the_context_window(tmp_path, llama_dir, files, capsys):
    long = _write(tmp_path / "long.txt",
                  POSITIVE[:3] + [" ".join(f"word{i}" for i in range(400))])
    status = main(["discover", "--model", llama_dir, "--positive", long,
                   "--negative", files["neg"], "--no-universal", "--top-k", "3",
                   "--out", str(tmp_path / "c.json")])
    line = _assert_one_error_line(status, capsys.readouterr().err,
                                  after_model_load=True)
    assert "context window of 128 tokens" in line
    assert not (tmp_path / "c.json").exists()


def test_fraction_and_top_k_together_is_a_usage_error(tmp_path, files, capsys):
    with pytest.raises(SystemExit) as info:
        main(["discover", "--positive", files["pos"], "--negative", files["neg"],
              "--fraction", "0.01", "--top-k", "5", "--out", str(tmp_path / "c.json")])
    line = _assert_one_error_line(info.value.code, capsys.readouterr().err)
    assert "--top-k" in line and "--fraction" in line


def test_bad_integer_is_a_usage_error(tmp_path, files, capsys):
    with pytest.raises(SystemExit) as info:
        main(["discover", "--positive", files["pos"], "--negative", files["neg"],
              "--top-k", "five", "--out", str(tmp_path / "c.json")])
    line = _assert_one_error_line(info.value.code, capsys.readouterr().err)
    assert "'five' is not an integer" in line


# -- the installed entry point -------------------------------------------------


def _cna_command() -> list[str]:
    script = Path(sys.executable).with_name("cna")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    found = shutil.which("cna")
    return [found] if found else [sys.executable, "-m", "workbench.cli"]


def test_console_script_reports_bad_input_on_one_line(tmp_path, files, llama_dir):
    command = _cna_command()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(
        [*command, "discover", "--positive", str(tmp_path / "missing.txt"),
         "--negative", files["neg"], "--out", str(tmp_path / "c.json")],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    line = _assert_one_error_line(result.returncode, result.stderr)
    assert "missing.txt" in line
    assert result.stdout == ""

    result = subprocess.run([*command, "steer", "--circuit", "c.json", "--multiplier", "x",
                             "Hi"], capture_output=True, text=True, cwd=tmp_path, env=env,
                            timeout=120)
    assert "'x' is not a number" in _assert_one_error_line(result.returncode, result.stderr)

    # An error found after loading the model: only the weight-loading progress bar may
    # precede the error line (no warnings, no log records, no traceback).
    long = _write(tmp_path / "long.txt", POSITIVE[:3] + ["lorem " * 400])
    result = subprocess.run([*command, "discover", "--model", llama_dir, "--positive", long,
                             "--negative", files["neg"], "--no-universal",
                             "--out", str(tmp_path / "c.json")],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    line = _assert_one_error_line(result.returncode, result.stderr, after_model_load=True)
    assert "context window" in line


# -- cna evaluate / cna mmlu -------------------------------------------------


@pytest.fixture(scope="module")
def qualitative_circuit(tmp_path_factory, llama_dir) -> str:
    """A circuit discovered on the tiny llama from the bundled qualitative pairs.

    (The JBB halves, e.g. ``jbb-harmful:discover``, work the same way but some of their
    prompts exceed the tiny model's 128-token context.)
    """
    out = tmp_path_factory.mktemp("qualitative") / "qualitative.json"
    _run_quietly(["discover", "--model", llama_dir, "--positive", "qualitative-harmful",
                  "--negative", "qualitative-benign", "--top-k", "6", "--no-universal",
                  "--out", str(out)])
    return str(out)


def test_evaluate_writes_one_row_per_prompt_and_condition(llama_dir, qualitative_circuit, tmp_path,
                                                          capsys):
    import pandas as pd

    out = tmp_path / "results.parquet"
    argv = ["evaluate", "--model", llama_dir, "--circuit", qualitative_circuit,
            "--benchmark", "jbb-benign,qualitative-benign", "--n", "3",
            "--multipliers", "0,1", "--max-new-tokens", "3", "--caa", "--random-control",
            "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    rows = pd.read_parquet(out)
    # baseline once, then cna, random and caa at each of the two multipliers, for
    # 3 sampled JBB prompts and the 8 qualitative ones
    assert len(rows) == (3 + 8) * (1 + 3 * 2)
    assert set(rows["benchmark"]) == {"jbb-benign[n=3,seed=0]", "qualitative-benign"}
    assert set(rows["kind"]) == {"baseline", "cna", "random", "caa"}
    assert {"refusal", "quality", "completion"} <= set(rows.columns)
    assert "refusal_rate" in printed and f"wrote {len(rows)} rows" in printed
    assert main(argv) == 0  # a finished sweep resumes with nothing left to do
    assert len(pd.read_parquet(out)) == len(rows)


def test_evaluate_caa_needs_recoverable_prompts(llama_dir, circuit_file, tmp_path, capsys):
    status = main(["evaluate", "--model", llama_dir, "--circuit", circuit_file, "--n", "2",
                   "--caa", "--out", str(tmp_path / "r.parquet")])
    line = _assert_one_error_line(status, capsys.readouterr().err, after_model_load=True)
    assert "caa_vector()" in line


def test_evaluate_sweeps_sizes_and_the_refusal_direction(llama_dir, qualitative_circuit,
                                                         tmp_path, capsys):
    import pandas as pd

    out = tmp_path / "sizes.parquet"
    # 0.01 of the tiny llama's 192 MLP neurons is 2 neurons; the circuit has 6.
    argv = ["evaluate", "--model", llama_dir, "--circuit", qualitative_circuit,
            "--benchmark", "jbb-benign", "--n", "2", "--multipliers", "0,2",
            "--max-new-tokens", "3", "--sizes", "0.01,4", "--random-control", "--direction",
            "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    rows = pd.read_parquet(out)
    # baseline once; cna and random at 2 sizes x 2 multipliers; the direction at 2
    assert len(rows) == 2 * (1 + 2 * 2 * 2 + 2)
    circuits = rows[rows["kind"].isin(["cna", "random"])]
    assert sorted(set(circuits["size"])) == [2, 4]
    assert (circuits["fraction"] == circuits["size"].astype(float) / 192).all()
    direction = rows[rows["kind"] == "direction"]
    assert set(direction["intervention"]) == {"refusal-direction"}
    assert direction["size"].isna().all() and len(direction) == 4
    assert re.search(r"refusal direction: layer [01] of 2, position -[1-5] \(auto; ablation ",
                     printed)
    assert "size" in printed and "fraction" in printed
    assert main(argv) == 0  # a finished size sweep resumes with nothing left to do
    assert len(pd.read_parquet(out)) == len(rows)


def test_evaluate_refuses_sizes_beyond_the_circuit_before_loading(llama_dir,
                                                                  qualitative_circuit,
                                                                  tmp_path, capsys):
    status = main(["evaluate", "--model", llama_dir, "--circuit", qualitative_circuit,
                   "--sizes", "2,7", "--out", str(tmp_path / "r.parquet")])
    line = _assert_one_error_line(status, capsys.readouterr().err)
    assert "circuit size 7 neurons is larger than the circuit (6 neurons)" in line
    status = _exit_status(["evaluate", "--model", llama_dir, "--circuit", qualitative_circuit,
                           "--sizes", "0.01,lots", "--out", str(tmp_path / "r.parquet")])
    line = _assert_one_error_line(status, capsys.readouterr().err)
    assert "'lots' is not a number" in line
    assert not (tmp_path / "r.parquet").exists()


def test_evaluate_direction_layer_needs_direction(llama_dir, qualitative_circuit, tmp_path,
                                                  capsys):
    status = main(["evaluate", "--model", llama_dir, "--circuit", qualitative_circuit,
                   "--direction-layer", "1", "--out", str(tmp_path / "r.parquet")])
    line = _assert_one_error_line(status, capsys.readouterr().err)
    assert "add --direction" in line


def test_evaluate_direction_by_separation(llama_dir, qualitative_circuit, tmp_path, capsys):
    argv = ["evaluate", "--model", llama_dir, "--circuit", qualitative_circuit,
            "--benchmark", "jbb-benign", "--n", "1", "--multipliers", "0",
            "--max-new-tokens", "1", "--direction", "--direction-criterion", "cohen_d",
            "--out", str(tmp_path / "r.parquet")]
    assert main(argv) == 0
    assert re.search(r"refusal direction: layer [01] of 2 \(auto; cohen_d ",
                     capsys.readouterr().out)


def test_evaluate_direction_criterion_needs_direction(llama_dir, qualitative_circuit,
                                                      tmp_path, capsys):
    status = main(["evaluate", "--model", llama_dir, "--circuit", qualitative_circuit,
                   "--direction-criterion", "cohen_d", "--out", str(tmp_path / "r.parquet")])
    line = _assert_one_error_line(status, capsys.readouterr().err)
    assert "add --direction" in line


def test_evaluate_direction_needs_recoverable_prompts(llama_dir, circuit_file, tmp_path,
                                                      capsys):
    status = main(["evaluate", "--model", llama_dir, "--circuit", circuit_file, "--n", "2",
                   "--direction", "--out", str(tmp_path / "r.parquet")])
    line = _assert_one_error_line(status, capsys.readouterr().err)
    assert "--direction needs the circuit's positive prompts" in line
    assert "refusal_direction()" in line


def test_mmlu_prompt_beyond_the_context_window_is_one_error_line(llama_dir, capsys):
    status = main(["mmlu", "--model", llama_dir, "--n", "4", "--shots", "5"])
    line = _assert_one_error_line(status, capsys.readouterr().err, after_model_load=True)
    assert "context window of 128 tokens" in line


@pytest.mark.integration
def test_mmlu_on_the_embedded_model(smollm, capsys):
    status = main(["mmlu", "--n", "8", "--subjects", "world_religions"])
    out = capsys.readouterr().out
    assert status == 0
    accuracy = float(re.search(r"baseline x1: accuracy ([0-9.]+) \(8 questions", out).group(1))
    assert 0.0 <= accuracy <= 1.0


# -- --remote ------------------------------------------------------------------


def test_remote_local_gives_the_same_circuit_completions_and_sweep(llama_dir, files, tmp_path,
                                                                    capsys):
    import pandas as pd

    circuits = {}
    for remote in ([], ["--remote", "local"]):
        out = tmp_path / f"c{len(remote)}.json"
        assert _discover(llama_dir, files, out, "--top-k", "5", *remote) == 0
        circuits[bool(remote)] = workbench.Circuit.load(out)
    assert [n.key for n in circuits[True].neurons] == [n.key for n in circuits[False].neurons]
    printed, rows = {}, {}
    for remote in ([], ["--remote", "local"]):
        capsys.readouterr()
        assert main(["steer", "--model", llama_dir, "--circuit", str(tmp_path / "c0.json"),
                     "--multiplier", "0", "--max-new-tokens", "4", *remote, "Hello"]) == 0
        printed[bool(remote)] = capsys.readouterr().out
        out = tmp_path / f"r{len(remote)}.parquet"
        assert main(["evaluate", "--model", llama_dir, "--circuit", str(tmp_path / "c0.json"),
                     "--benchmark", "jbb-benign", "--n", "2", "--multipliers", "0,2",
                     "--max-new-tokens", "3", "--out", str(out), *remote]) == 0
        rows[bool(remote)] = pd.read_parquet(out)["completion"].tolist()
    assert printed[True] == printed[False]
    assert rows[True] == rows[False]


def test_remote_takes_ndif_or_local_only(llama_dir, files, tmp_path, capsys):
    status = _exit_status(["discover", "--model", llama_dir, "--positive", files["pos"],
                           "--negative", files["neg"], "--out", str(tmp_path / "c.json"),
                           "--remote", "yes"])
    assert "--remote" in _assert_one_error_line(status, capsys.readouterr().err)
    assert not (tmp_path / "c.json").exists()


# -- damaged files and impossible output paths ----------------------------------------


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if the command gets as far as loading a model."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("the bad path or file must be refused before the model loads")

    monkeypatch.setattr("workbench.models.load_model", refuse)


@pytest.mark.usefixtures("no_model_load")
def test_discover_out_that_cannot_be_created_is_refused_before_any_work(
        tmp_path, llama_dir, files, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    status = _discover(llama_dir, files, blocker / "c.json", "--top-k", "5")
    line = _assert_one_error_line(status, capsys.readouterr().err)
    assert "a-file" in line and "not a folder" in line
    (tmp_path / "folder").mkdir()
    status = _discover(llama_dir, files, tmp_path / "folder", "--top-k", "5")
    assert "is a folder" in _assert_one_error_line(status, capsys.readouterr().err)
    status = _discover(llama_dir, files, tmp_path / "c.json", "--top-k", "5",
                       "--neuronpedia", str(tmp_path / "c.json"))
    assert "same file" in _assert_one_error_line(status, capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "folder"]


@pytest.mark.usefixtures("no_model_load")
def test_evaluate_refuses_a_resume_file_that_is_not_parquet_and_keeps_it(
        tmp_path, llama_dir, qualitative_circuit, capsys):
    out = tmp_path / "results.parquet"
    out.write_text("benchmark,intervention\njbb-harmful,cna\n")
    argv = ["evaluate", "--model", llama_dir, "--circuit", qualitative_circuit,
            "--benchmark", "qualitative-benign", "--out", str(out)]
    line = _assert_one_error_line(main(argv), capsys.readouterr().err)
    assert "cannot be read as parquet" in line and "new file" in line
    assert out.read_text() == "benchmark,intervention\njbb-harmful,cna\n"
    argv[-1] = str(tmp_path)
    assert "is a folder" in _assert_one_error_line(main(argv), capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.parquet"]


def test_a_truncated_gguf_model_is_one_error_line(tmp_path, circuit_file, capsys, monkeypatch):
    monkeypatch.setenv("CNA_WORKBENCH_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF\x03\x00\x00\x00\x02\x00\x00")  # the header, cut short
    status = main(["steer", "--model", str(model), "--circuit", circuit_file,
                   "--multiplier", "0", "Hi"])
    line = _assert_one_error_line(status, capsys.readouterr().err)
    assert "truncated" in line and "model.gguf" in line
    assert not (tmp_path / "cache" / "gguf").exists() or not any(
        (tmp_path / "cache" / "gguf").iterdir())


def test_a_truncated_model_folder_is_one_error_line(tmp_path, llama_dir, circuit_file, capsys):
    folder = tmp_path / "model"
    shutil.copytree(llama_dir, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    status = main(["steer", "--model", str(folder), "--circuit", circuit_file,
                   "--multiplier", "0", "Hi"])
    line = _assert_one_error_line(status, capsys.readouterr().err)
    assert "truncated" in line and "model.safetensors" in line


def test_a_circuit_with_a_nan_score_is_one_error_line(tmp_path, circuit_file, capsys):
    data = json.loads(Path(circuit_file).read_text())
    data["neurons"][0]["score"] = float("nan")
    damaged = tmp_path / "nan.json"
    damaged.write_text(json.dumps(data))
    line = _assert_one_error_line(main(["compare", circuit_file, str(damaged)]),
                                  capsys.readouterr().err)
    assert "neurons[0].score is nan" in line


@pytest.mark.usefixtures("no_model_load")
def test_a_csv_cut_inside_a_quoted_prompt_is_one_error_line(tmp_path, llama_dir, files,
                                                            capsys):
    cut = tmp_path / "cut.csv"
    cut.write_text('prompt\n"How do I pick\na lock?"\n"Where can I buy')
    status = main(["discover", "--model", llama_dir, "--positive", str(cut), "--negative",
                   files["neg"], "--no-universal", "--out", str(tmp_path / "c.json")])
    assert "not valid csv" in _assert_one_error_line(status, capsys.readouterr().err)


@pytest.mark.usefixtures("no_model_load")
def test_bake_and_safety_tune_refuse_their_out_before_loading(tmp_path, llama_dir,
                                                              circuit_file, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    status = main(["bake", "--model", llama_dir, "--circuit", circuit_file,
                   "--multiplier", "0", "--out", str(a_file)])
    assert "not a folder" in _assert_one_error_line(status, capsys.readouterr().err)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "manifest.json").write_text("{}")
    status = main(["safety-tune", "--model", llama_dir, "--out", str(taken), "--max-steps",
                   "1", "--no-eval"])
    line = _assert_one_error_line(status, capsys.readouterr().err)
    assert "not empty" in line and "--force" in line
    status = main(["compare-models", "--models", llama_dir, "--out", str(a_file)])
    assert "not a folder" in _assert_one_error_line(status, capsys.readouterr().err)
    assert a_file.read_text() == "x" and [p.name for p in taken.iterdir()] == ["manifest.json"]


# -- search ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_llama_dir(tmp_path_factory, tiny_tokenizer) -> str:
    """The tiny llama with room for JBB prompts (512 positions), saved as a folder."""
    path = tmp_path_factory.mktemp("tiny-llama-512")
    make_tiny_hf("llama", max_position_embeddings=512).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return str(path)


def test_search_runs_resumes_and_writes_its_pareto_trials(long_llama_dir, tmp_path, capsys):
    study, csv = tmp_path / "gate.db", tmp_path / "pareto.csv"
    argv = ["search", "--model", long_llama_dir, "--study", str(study), "--trials", "2",
            "--contrasts", "jbb-pair", "--min-fraction", "0.001", "--max-fraction", "0.02",
            "--heldout-n", "2", "--max-new-tokens", "2", "--pareto-csv", str(csv)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "2 trials in" in out and "Pareto trials" in out
    pareto = pd.read_csv(csv)
    assert len(pareto) >= 1 and {"refusal", "random_refusal", "kl"} <= set(pareto.columns)
    assert main([*argv[:6], "1", *argv[7:]]) == 0  # one more trial, same study
    assert "3 trials in" in capsys.readouterr().out


@pytest.mark.parametrize("extra", [["--bands", "last-5%"], ["--max-multiplier", "2"],
                                   ["--trials", "0"]])
def test_search_refuses_a_bad_space_before_loading(tmp_path, capsys, extra):
    status = _exit_status(["search", "--model", str(tmp_path / "missing"), "--study",
                           str(tmp_path / "s.db"), *extra])
    line = _assert_one_error_line(status, capsys.readouterr().err)
    assert "missing" not in line  # refused before the model path was looked at


def test_search_refuses_a_folder_as_its_study(tmp_path, capsys):
    status = _exit_status(["search", "--study", str(tmp_path)])
    assert "--study" in _assert_one_error_line(status, capsys.readouterr().err)


# -- a killed run -------------------------------------------------------------------------


def test_a_killed_evaluate_resumes_to_the_rows_of_an_uninterrupted_run(llama_dir, circuit_file,
                                                                         files, tmp_path):
    """SIGKILL while rows are being written: no half-written file, and a rerun completes
    to exactly the rows of a run that was never stopped."""
    import signal
    import subprocess
    import sys
    import time

    prompts = _write(tmp_path / "prompts.txt", POSITIVE + NEGATIVE + OTHER_NEGATIVE)
    argv = ["evaluate", "--model", llama_dir, "--circuit", circuit_file, "--benchmark",
            prompts, "--multipliers", "0,2", "--random-control", "--batch-size", "1",
            "--max-new-tokens", "12"]
    whole, killed = tmp_path / "whole.parquet", tmp_path / "killed.parquet"
    _run_quietly([*argv, "--out", str(whole)])
    process = subprocess.Popen([sys.executable, "-m", "workbench.cli", *argv, "--out",
                                str(killed)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not killed.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    partial = pd.read_parquet(killed)  # whatever was written is a whole file
    expected = pd.read_parquet(whole)
    assert 0 < len(partial) < len(expected)
    # nothing but the three files (a kill inside a write could leave only a hidden
    # ".killed.parquet.<random>.tmp" beside them, never a half-written target)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == sorted(
        ["prompts.txt", "whole.parquet", "killed.parquet"])
    _run_quietly([*argv, "--out", str(killed)])
    key = ["benchmark", "intervention", "multiplier", "prompt_index"]
    resumed = pd.read_parquet(killed).sort_values(key).reset_index(drop=True)
    assert resumed.equals(expected.sort_values(key).reset_index(drop=True))


def test_a_killed_search_resumes_keeping_its_finished_trials(long_llama_dir, tmp_path):
    """SIGKILL in the middle of a study: the trials it finished stay as they were, and a
    rerun adds the trials asked for without repeating them."""
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    import optuna

    study = tmp_path / "gate.db"
    argv = ["search", "--model", long_llama_dir, "--study", str(study), "--contrasts",
            "jbb-pair", "--min-fraction", "0.001", "--max-fraction", "0.02", "--heldout-n",
            "2", "--max-new-tokens", "2"]

    def finished() -> list:
        loaded = optuna.load_study(study_name="cna-gate-search", storage=f"sqlite:///{study}")
        return loaded.get_trials(states=[optuna.trial.TrialState.COMPLETE])

    def finished_while_running() -> int:
        """Counted read-only: opening the study through Optuna while the search creates it
        would write into it too."""
        if not study.exists():
            return 0
        try:
            with sqlite3.connect(f"file:{study}?mode=ro", uri=True) as db:
                return db.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'"
                                  ).fetchone()[0]
        except sqlite3.Error:  # its tables are not there yet
            return 0

    log = tmp_path.parent / f"{tmp_path.name}.log"
    with log.open("w") as output:
        process = subprocess.Popen([sys.executable, "-m", "workbench.cli", *argv, "--trials",
                                    "50"], stdout=subprocess.DEVNULL, stderr=output)
        try:
            deadline = time.monotonic() + 300
            while (finished_while_running() < 2 and process.poll() is None
                   and time.monotonic() < deadline):
                time.sleep(0.2)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
    assert finished_while_running() >= 2, log.read_text()[-2000:]
    before = [(t.number, t.params, t.values) for t in finished()]
    assert main([*argv, "--trials", "2"]) == 0
    after = [(t.number, t.params, t.values) for t in finished()]
    assert after[:len(before)] == before and len(after) == len(before) + 2
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "gate.db", "gate.db.contrasts"]
