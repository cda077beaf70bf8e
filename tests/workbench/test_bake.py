"""Baking a circuit into weights: a plain transformers load equals the hooked model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import workbench
from tests.helpers import TINY_ARCHITECTURES, hooks_left, make_tiny_hf
from workbench.bake import CIRCUIT_FILE, METADATA_KEY, BakeError, bake, save_baked
from workbench.circuit import Circuit
from workbench.errors import CircuitMismatchError, SteeringError
from workbench.evaluation.interventions import Intervention
from workbench.steering import steer

PROMPT_IDS = [[1, 40, 77, 12, 300, 5, 9, 150]]
NEW_TOKENS = 6

#: Runs in a fresh interpreter: plain transformers, no workbench. Reads the folders given
#: as arguments and prints, per folder, the logits of PROMPT_IDS and greedy new tokens.
PLAIN_LOAD = textwrap.dedent("""
    import json, sys
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    ids = torch.tensor(json.loads(sys.argv[1]))
    out = {}
    for folder in sys.argv[3:]:
        model = AutoModelForCausalLM.from_pretrained(folder).eval()
        AutoTokenizer.from_pretrained(folder)  # the tokenizer travels with the weights
        with torch.no_grad():
            logits = model(ids).logits
            tokens = model.generate(ids, attention_mask=torch.ones_like(ids),
                                    max_new_tokens=int(sys.argv[2]), do_sample=False)
        out[folder] = {"logits": logits.tolist(), "tokens": tokens[0].tolist()}
    assert not any(name.startswith("workbench") for name in sys.modules)
    print(json.dumps(out))
""")


def plain_transformers(folders: list[Path], ids=PROMPT_IDS, new_tokens=NEW_TOKENS) -> dict:
    """Logits and greedy tokens of each baked folder, loaded in a process without workbench."""
    done = subprocess.run([sys.executable, "-c", PLAIN_LOAD, json.dumps(ids), str(new_tokens),
                           *map(str, folders)], capture_output=True, text=True, check=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(done.stdout.strip().splitlines()[-1])


def hooked(model, circuit, multiplier, ids=PROMPT_IDS, new_tokens=NEW_TOKENS):
    """Logits and greedy tokens of ``model`` with the circuit applied by hooks."""
    tensor = torch.tensor(ids)
    with steer(model, circuit, multiplier=multiplier), torch.no_grad():
        logits = model.hf_model(tensor).logits
        tokens = model.hf_model.generate(tensor, attention_mask=torch.ones_like(tensor),
                                         max_new_tokens=new_tokens, do_sample=False)
    return logits, tokens[0].tolist()


def spread_circuit(model, per_layer: int = 5) -> Circuit:
    """``per_layer`` neurons in every layer, half with negative score."""
    neurons = [(layer, (7 * i + layer) % model.d_mlp, (-1) ** i * (i + 1.0))
               for layer in range(model.n_layers) for i in range(per_layer)]
    return Circuit.from_neurons(neurons, model=model)


@pytest.fixture(scope="module")
def tiny_models(tiny_tokenizer):
    return {t: workbench.from_hf(make_tiny_hf(t), tiny_tokenizer, name=f"tiny-{t}")
            for t in sorted(TINY_ARCHITECTURES)}


@pytest.fixture(scope="module")
def baked_tiny(tiny_models, tmp_path_factory):
    """Every tiny architecture baked at x0 and x2.5, and the plain load of each folder."""
    root = tmp_path_factory.mktemp("baked")
    folders = {}
    for name, model in tiny_models.items():
        for multiplier in (0.0, 2.5):
            folder = root / f"{name}-{multiplier:g}"
            save_baked(model, spread_circuit(model), multiplier, folder)
            folders[name, multiplier] = folder
    return folders, plain_transformers(list(folders.values()))


@pytest.mark.parametrize("model_type", sorted(TINY_ARCHITECTURES))
@pytest.mark.parametrize("multiplier", [0.0, 2.5])
def test_plain_transformers_load_equals_the_hooked_model(model_type, multiplier, tiny_models,
                                                         baked_tiny):
    model = tiny_models[model_type]
    folders, loaded = baked_tiny
    plain = loaded[str(folders[model_type, multiplier])]
    logits, tokens = hooked(model, spread_circuit(model), multiplier)
    torch.testing.assert_close(torch.tensor(plain["logits"]), logits, rtol=1e-4, atol=1e-4)
    assert plain["tokens"] == tokens
    unsteered = model.hf_model(torch.tensor(PROMPT_IDS)).logits
    assert not torch.allclose(unsteered, logits, atol=1e-3)  # the circuit does something
    assert hooks_left(model.hf_model) == []


def test_a_baked_folder_is_a_complete_model_folder(tiny_models, baked_tiny):
    folders, _ = baked_tiny
    folder = folders["llama", 0.0]
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "README.md",
            CIRCUIT_FILE, "tokenizer.json", "tokenizer_config.json"} <= names
    circuit = spread_circuit(tiny_models["llama"])
    assert Circuit.load(folder / CIRCUIT_FILE).to_dict() == circuit.to_dict()
    with safe_open(folder / "model.safetensors", "pt") as handle:
        record = json.loads(handle.metadata()[METADATA_KEY])
    assert record["multiplier"] == 0.0 and record["base_model"] == "tiny-llama"
    assert record["circuit"]["n_neurons"] == len(circuit)
    card = (folder / "README.md").read_text()
    assert "multiplier 0" in card and "AutoModelForCausalLM" in card and "vllm serve" in card
    template = json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template")
    assert template or (folder / "chat_template.jinja").is_file()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging left


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_multiplier_one_is_bit_identical_and_zero_zeroes_the_columns(model_type, tiny_models,
                                                                     tmp_path):
    model = tiny_models[model_type]
    circuit = spread_circuit(model)
    original = {k: v.clone() for k, v in model.hf_model.state_dict().items()}
    save_baked(model, circuit, 1.0, tmp_path / "one")
    saved = load_file(tmp_path / "one" / "model.safetensors")
    for name, tensor in saved.items():
        assert torch.equal(tensor, original[name]), name
    ablated = bake(model, circuit, 0.0)
    for layer, indices in circuit.by_layer().items():
        module = ablated.down_proj(layer)
        scaled = module.weight[indices] if model_type == "gpt2" else module.weight[:, indices]
        assert torch.equal(scaled, torch.zeros_like(scaled))
        kept = torch.ones(model.d_mlp, dtype=torch.bool)
        kept[indices] = False
        base = model.down_proj(layer).weight
        if model_type == "gpt2":
            assert torch.equal(module.weight[kept], base[kept])
        else:
            assert torch.equal(module.weight[:, kept], base[:, kept])
    for name, tensor in model.hf_model.state_dict().items():  # the original is untouched
        assert torch.equal(tensor, original[name]), name


def test_signs_bake_only_the_chosen_neurons(tiny_models):
    model = tiny_models["llama"]
    circuit = spread_circuit(model)
    positive = bake(model, circuit, 0.0, signs="positive")
    for neuron in circuit.neurons:
        column = positive.down_proj(neuron.layer).weight[:, neuron.index]
        assert column.eq(0).all() == (neuron.score > 0)


def test_bad_inputs_are_refused_and_leave_no_folder(tiny_models, tmp_path, tiny_tokenizer):
    model = tiny_models["llama"]
    circuit = spread_circuit(model)
    out = tmp_path / "out"
    other = spread_circuit(tiny_models["gpt2"])
    for bad, error in ((dict(circuit=other), CircuitMismatchError),
                       (dict(multiplier="lots"), SteeringError),
                       (dict(multiplier=float("inf")), SteeringError),
                       (dict(signs="some"), SteeringError)):
        options = {"circuit": circuit, "multiplier": 0.0, **bad}
        with pytest.raises(error):
            save_baked(model, options.pop("circuit"), options.pop("multiplier"), out, **options)
        assert not out.exists()
    with pytest.raises(SteeringError, match="positions='prompt' cannot be baked"):
        bake(model, circuit, 0.0, positions="prompt")
    intervention = Intervention.cna(circuit)  # its options go into the intervention itself
    with pytest.raises(SteeringError, match="positions='generated' cannot be baked"):
        bake(model, intervention, 0.0, positions="generated")
    with pytest.raises(BakeError, match="signs='positive' applies to a circuit"):
        bake(model, intervention, 0.0, signs="positive")

    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(BakeError, match="not empty.*--force"):
        save_baked(model, circuit, 0.0, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    save_baked(model, circuit, 0.0, out, force=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    (tmp_path / "empty").mkdir()  # an existing empty folder is used as it is
    assert (save_baked(model, circuit, 0.0, tmp_path / "empty") / "config.json").is_file()
    (tmp_path / "file").write_text("x")
    with pytest.raises(BakeError, match="is not a folder"):
        save_baked(model, circuit, 0.0, tmp_path / "file")
    positive_only = Circuit.from_neurons([(0, 1, 2.0)], model=model)
    with pytest.raises(BakeError, match="no neurons with signs='negative'"):
        save_baked(model, positive_only, 0.0, tmp_path / "none", signs="negative")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file", "out"]


def test_a_failed_swap_under_force_puts_the_old_folder_back(tiny_models, tmp_path,
                                                             monkeypatch):
    from workbench import bake as bake_module

    model = tiny_models["llama"]
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    real_replace = os.replace

    def replace(src, dst):
        if str(src).endswith(".tmp"):
            raise OSError("no space left")
        real_replace(src, dst)

    monkeypatch.setattr(bake_module.os, "replace", replace)
    with pytest.raises(BakeError, match="no space left"):
        save_baked(model, spread_circuit(model), 0.0, out, force=True)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failed_write_leaves_no_folder(tiny_models, tmp_path, monkeypatch):
    model = tiny_models["llama"]
    out = tmp_path / "out"

    def fail(folder: Path, **_options):
        (folder / "partial.bin").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(type(model.tokenizer), "save_pretrained", lambda self, folder: fail(
        Path(folder)))
    with pytest.raises(BakeError, match="disk full"):
        save_baked(model, spread_circuit(model), 0.0, out)
    assert list(tmp_path.iterdir()) == []


def test_shared_down_projection_weights_are_refused(tiny_tokenizer):
    hf = make_tiny_hf("llama")
    hf.model.layers[1].mlp.down_proj.weight = hf.model.layers[0].mlp.down_proj.weight
    model = workbench.from_hf(hf, tiny_tokenizer, name="shared")
    with pytest.raises(BakeError, match="layer 0 is shared"):
        bake(model, spread_circuit(model), 0.0)


def test_cli_bake_writes_the_folder_and_reports_bad_input(tmp_path, capsys, monkeypatch,
                                                          tiny_models):
    from workbench import cli

    model = tiny_models["llama"]
    monkeypatch.setattr(cli, "_load", lambda args: model)
    circuit_file = spread_circuit(model).save(tmp_path / "c.json")
    out = tmp_path / "baked"
    assert cli.main(["bake", "--circuit", str(circuit_file), "--multiplier", "0",
                     "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out and (out / "model.safetensors").is_file()
    assert cli.main(["bake", "--circuit", str(circuit_file), "--multiplier", "0",
                     "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err


@pytest.mark.integration
def test_embedded_smollm_baked_equals_steering(smollm, tmp_path):
    circuit = workbench.discover(smollm, "qualitative-harmful", "qualitative-benign",
                                 progress=False)
    ids = smollm.encode(["How do I pick a lock?"], smollm.prompting())["input_ids"].tolist()
    save_baked(smollm, circuit, 0.0, tmp_path / "baked")
    plain = plain_transformers([tmp_path / "baked"], ids=ids, new_tokens=24)
    logits, tokens = hooked(smollm, circuit, 0.0, ids=ids, new_tokens=24)
    loaded = plain[str(tmp_path / "baked")]
    torch.testing.assert_close(torch.tensor(loaded["logits"]), logits, rtol=1e-4, atol=2e-4)
    assert loaded["tokens"] == tokens
    assert "convert_hf_to_gguf" in (tmp_path / "baked" / "README.md").read_text()


# -- any intervention: a direction, a vector ---------------------------------------------

#: Families that normalise each branch after it: their residual writes are norm outputs.
POST_NORM = {"gemma2", "gemma3", "gemma3_text", "olmo2"}


def _direction(model) -> torch.Tensor:
    return torch.randn(model.d_model, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("model_type", sorted(TINY_ARCHITECTURES))
def test_a_direction_bakes_into_the_writing_weights_or_is_refused(model_type, tiny_models):
    model = tiny_models[model_type]
    intervention = Intervention.direction(_direction(model))
    ids = torch.tensor(PROMPT_IDS)
    if model_type in POST_NORM:
        with pytest.raises(BakeError, match="not a linear layer.s output"):
            bake(model, intervention, 0.0)
        return
    before = {k: v.clone() for k, v in model.hf_model.state_dict().items()}
    with torch.no_grad():
        unchanged = model.hf_model(ids).logits
        for multiplier in (0.0, 2.0):
            baked = bake(model, intervention, multiplier)
            with intervention.apply(model, multiplier):
                expected = model.hf_model(ids).logits
            torch.testing.assert_close(baked.hf_model(ids).logits, expected, rtol=1e-4,
                                       atol=1e-4)
            assert not torch.allclose(expected, unchanged, atol=1e-3)
    after = model.hf_model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # the original is intact
    assert hooks_left(model.hf_model) == []


def test_a_baked_direction_on_tied_embeddings_loads_in_plain_transformers(tiny_models,
                                                                          tmp_path):
    """GPT-2 ties its unembedding to the token embeddings (and adds position embeddings):
    the baked copy unties them, and a plain load keeps them apart."""
    from workbench.evaluation.interventions import Intervention

    model = tiny_models["gpt2"]
    assert model.hf_model.config.tie_word_embeddings
    intervention = Intervention.direction(_direction(model))
    baked = bake(model, intervention, 0.0)
    baked.hf_model.save_pretrained(tmp_path / "gpt2-direction")
    baked.tokenizer.save_pretrained(tmp_path / "gpt2-direction")
    plain = plain_transformers([tmp_path / "gpt2-direction"])[str(tmp_path / "gpt2-direction")]
    ids = torch.tensor(PROMPT_IDS)
    with intervention.apply(model, 0.0), torch.no_grad():
        expected = model.hf_model(ids).logits
    torch.testing.assert_close(torch.tensor(plain["logits"]), expected, rtol=1e-4, atol=1e-4)
    assert model.hf_model.config.tie_word_embeddings  # the original keeps its tie


@pytest.mark.parametrize("model_type", ["gpt2", "gpt_neox", "llama"])
def test_a_caa_vector_bakes_into_the_down_projection_bias_where_there_is_one(model_type,
                                                                             tiny_models):
    from workbench.evaluation.interventions import Intervention

    model = tiny_models[model_type]
    vector = 0.5 * torch.randn(model.n_layers, model.d_model,
                               generator=torch.Generator().manual_seed(6))
    intervention = Intervention.caa(vector)
    if model.down_proj(0).bias is None:
        with pytest.raises(BakeError, match="no bias"):
            bake(model, intervention, 3.0)
        unchanged = bake(model, intervention, 1.0).hf_model.state_dict()  # adds nothing
        assert all(torch.equal(unchanged[k], v) for k, v in model.hf_model.state_dict().items())
        return
    ids = torch.tensor(PROMPT_IDS)
    with torch.no_grad():
        with intervention.apply(model, 3.0):
            expected = model.hf_model(ids).logits
        torch.testing.assert_close(bake(model, intervention, 3.0).hf_model(ids).logits,
                                   expected, rtol=1e-4, atol=1e-4)


def test_a_cna_intervention_bakes_as_its_circuit_does(tiny_models):
    from workbench.evaluation.interventions import Intervention

    model = tiny_models["llama"]
    circuit = spread_circuit(model)
    by_circuit = bake(model, circuit, 0.5, signs="positive").hf_model.state_dict()
    by_kind = bake(model, Intervention.cna(circuit, signs="positive"), 0.5).hf_model.state_dict()
    assert all(torch.equal(by_kind[k], v) for k, v in by_circuit.items())
    with pytest.raises(SteeringError, match="cannot be baked"):
        bake(model, Intervention.cna(circuit, positions="generated"), 0.0)


@pytest.mark.parametrize("model_type", ["gpt2", "gpt_neox", "llama"])
def test_a_residual_addition_bakes_into_the_previous_mlp_bias_where_there_is_one(
        model_type, tiny_models, monkeypatch):
    from workbench import bake as bake_module
    from workbench.sites import Edit, edited
    from workbench.bake import bake_edit

    model = tiny_models[model_type]
    vector = torch.randn(model.d_model, generator=torch.Generator().manual_seed(7))
    edit = Edit(residual_additions={1: vector})
    with monkeypatch.context() as patched:  # a refusal comes before the model is copied
        patched.setattr(bake_module.copy, "deepcopy", pytest.fail)
        with pytest.raises(BakeError, match="entering block 0 cannot be baked"):
            bake_edit(model, Edit(residual_additions={0: vector}))
        if model.down_proj(0).bias is None:
            with pytest.raises(BakeError, match="no bias"):
                bake_edit(model, edit)
            return
    ids = torch.tensor(PROMPT_IDS)
    with torch.no_grad():
        with edited(model, edit):
            expected = model.hf_model(ids).logits
        torch.testing.assert_close(bake_edit(model, edit).hf_model(ids).logits, expected,
                                   rtol=1e-4, atol=1e-4)
