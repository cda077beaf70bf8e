"""Bake a circuit at a fixed multiplier into plain weights that any serving engine runs.

Scaling neuron ``j``'s down-projection input by ``m`` at every position is exactly scaling
column ``j`` of the down-projection weight by ``m``::

    down_proj(x * s) = W @ diag(s) @ x + b      (s_j = m for circuit neurons, else 1)

So a circuit at a fixed multiplier needs no hooks: :func:`bake` returns a copy of the
model whose down-projection columns (rows of GPT-2's ``Conv1D``, which stores its weight
transposed) are scaled; the bias is unchanged. :func:`save_baked` writes that copy as a
standard Hugging Face folder (safetensors, config, tokenizer with its chat template,
generation config), with the circuit JSON beside it, a model card, and the provenance in
the safetensors header metadata.

Only ``positions="all"`` can be baked: a weight cannot tell prompt tokens from generated
ones.

Example:
    >>> baked = bake(model, circuit, 0.0)                              # doctest: +SKIP
    >>> save_baked(model, circuit, 0.0, "smollm2-ablated")             # doctest: +SKIP
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import load_file, save_file

from .circuit import Circuit
from .errors import OutputPathError, SteeringError, WorkbenchError
from .models import WorkbenchModel, from_hf
from .outputs import check_output
from .values import Signs, check_multiplier, check_positions_signs

#: key of the provenance JSON in the safetensors header metadata
METADATA_KEY = "cna_workbench.bake"
CIRCUIT_FILE = "circuit.json"


class BakeError(WorkbenchError):
    """A circuit cannot be baked into this model, or the output folder is not usable."""


def bake(model: WorkbenchModel, circuit: Circuit, multiplier: float, *,
         signs: Signs = "all", positions: str = "all") -> WorkbenchModel:
    """A new model whose weights apply ``circuit`` at ``multiplier``; ``model`` is untouched.

    Args:
        multiplier: as in :func:`~workbench.steer` (0 ablates, 1 is the unchanged model).
        signs: bake ``"all"`` circuit neurons, or only the ``"positive"`` or
            ``"negative"`` ones.
        positions: must be ``"all"``; ``"prompt"`` and ``"generated"`` need hooks.

    Example:
        >>> from workbench.circuit import Circuit
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> hf = LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, hidden_size=16,
        ...     intermediate_size=32, num_attention_heads=2, num_key_value_heads=2,
        ...     vocab_size=50))
        >>> class Tok: chat_template = None; pad_token = "<pad>"
        >>> model = from_hf(hf, Tok(), name="tiny")
        >>> circuit = Circuit.from_neurons([(1, 3)], model=model.info())
        >>> baked = bake(model, circuit, 0.0)
        >>> bool(baked.down_proj(1).weight[:, 3].eq(0).all()), baked.name
        (True, 'tiny-baked')
    """
    model.require_local("bake", calls_the_model=False)
    value = check_multiplier(multiplier)
    if positions != "all":
        raise SteeringError(f"positions={positions!r} cannot be baked: a weight acts on every "
                            "position, so only positions='all' has a weight equivalent")
    check_positions_signs(positions, signs)
    circuit.check_model(model)
    _refuse_shared_down_projections(model)
    baked = from_hf(copy.deepcopy(model.hf_model), model.tokenizer, name=f"{model.name}-baked",
                    source=model.source)
    chosen = circuit.by_layer(signs)
    if not chosen:
        raise BakeError(f"the circuit has no neurons with signs={signs!r}; nothing to bake")
    with torch.no_grad():
        for layer, indices in chosen.items():
            module = baked.down_proj(layer)
            # Linear: [d_model, d_mlp]; Conv1D: [d_mlp, d_model]. A Parameter, which torch
            # types as Tensor | Module, the type of any attribute of a Module.
            weight = cast(torch.Tensor, module.weight)
            index = indices.to(weight.device)
            if _neuron_axis(module, layer) == 1:
                weight[:, index] *= value
            else:
                weight[index, :] *= value
    return baked


def _neuron_axis(module: torch.nn.Module, layer: int) -> int:
    """The weight axis that indexes MLP neurons: 1 for ``nn.Linear``, 0 for GPT-2's Conv1D."""
    if not module.weight.dtype.is_floating_point:
        raise BakeError(f"the down-projection of layer {layer} has {module.weight.dtype} "
                        "weights (quantised?); load the model in float16/bfloat16/float32 "
                        "to bake it")
    if isinstance(module, torch.nn.Linear):
        return 1
    if type(module).__name__ == "Conv1D" and hasattr(module, "nx"):
        return 0
    raise BakeError(f"cannot tell which weight axis of {type(module).__name__} (layer {layer}) "
                    "holds the MLP neurons; only nn.Linear and GPT-2's Conv1D can be baked")


def _refuse_shared_down_projections(model: WorkbenchModel) -> None:
    """Raise if a down-projection weight is shared with any other parameter name."""
    names: dict[int, list[str]] = {}
    for name, parameter in model.hf_model.named_parameters(remove_duplicate=False):
        names.setdefault(id(parameter), []).append(name)
    for layer in range(model.n_layers):
        weight = model.down_proj(layer).weight
        if len(names.get(id(weight), [])) > 1:
            raise BakeError(f"the down-projection weight of layer {layer} is shared "
                            f"({', '.join(names[id(weight)])}); scaling it would change the "
                            "other uses too, so this model cannot be baked")


def provenance(model: WorkbenchModel, circuit: Circuit, multiplier: float,
               signs: Signs = "all") -> dict[str, Any]:
    """What a baked folder records: base model, circuit, multiplier, signs and formula."""
    return {
        "base_model": model.name, "base_source": model.source,
        "multiplier": check_multiplier(multiplier), "signs": signs, "positions": "all",
        "circuit": {"name": circuit.name, "n_neurons": len(circuit.select(signs)),
                    "layer_counts": {str(k): len(v) for k, v in circuit.by_layer(signs).items()},
                    "prompts": circuit.to_dict()["prompts"],
                    "sha256": hashlib.sha256(circuit.to_json().encode()).hexdigest()},
        "formula": "down_proj.weight[:, j] *= multiplier for every circuit neuron j "
                   "(GPT-2 Conv1D: weight[j, :]); biases unchanged",
    }


def save_baked(model: WorkbenchModel, circuit: Circuit, multiplier: float,
               out_dir: str | Path, *, signs: Signs = "all", force: bool = False) -> Path:
    """Bake and write a Hugging Face model folder to ``out_dir`` (all or nothing).

    The folder holds the safetensors weights (provenance in their header metadata under
    :data:`METADATA_KEY`), ``config.json``, ``generation_config.json``, the tokenizer with
    its chat template, ``circuit.json`` and a ``README.md`` model card. An existing
    non-empty ``out_dir`` is refused unless ``force``. The folder is written beside
    ``out_dir`` first and renamed into place, so a failure leaves ``out_dir`` as it was
    (absent, empty, or the old folder under ``force``).

    Example:
        >>> save_baked(model, circuit, 0.0, "smollm2-ablated")  # doctest: +SKIP
        >>> # later, in any process: AutoModelForCausalLM.from_pretrained("smollm2-ablated")
    """
    out = Path(out_dir).resolve()
    _check_out(out, force)
    baked = bake(model, circuit, multiplier, signs=signs)
    record = provenance(model, circuit, multiplier, signs)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.{secrets.token_hex(6)}.tmp"
    try:
        _write_folder(baked, circuit, record, staging)
        _check_out(out, force)  # again: the write takes a while
        _swap_into_place(staging, out)
    except OSError as exc:
        raise BakeError(f"could not write {str(out)!r}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _check_out(out: Path, force: bool) -> None:
    """Refuse an ``out_dir`` that cannot be written, or a non-empty one unless ``force``."""
    try:
        check_output(out, kind="folder", existing="replace" if force else "refuse")
    except OutputPathError as exc:
        raise BakeError(str(exc)) from None


def _swap_into_place(staging: Path, out: Path) -> None:
    """Rename ``staging`` to ``out``; a non-empty ``out`` is replaced, restored on failure."""
    if not out.exists() or not any(out.iterdir()):
        os.replace(staging, out)  # a rename onto an empty folder replaces it
        return
    trash = out.parent / f".{out.name}.{secrets.token_hex(6)}.old"
    os.replace(out, trash)
    try:
        os.replace(staging, out)
    except BaseException:
        os.replace(trash, out)
        raise
    shutil.rmtree(trash, ignore_errors=True)


def _write_folder(baked: WorkbenchModel, circuit: Circuit, record: dict[str, Any],
                  folder: Path) -> None:
    folder.mkdir(parents=True)
    baked.hf_model.save_pretrained(folder, safe_serialization=True)
    baked.tokenizer.save_pretrained(folder)
    metadata = {"format": "pt", METADATA_KEY: json.dumps(record, sort_keys=True)}
    for weights in sorted(folder.glob("*.safetensors")):
        save_file(load_file(weights), weights, metadata=metadata)
    circuit.save(folder / CIRCUIT_FILE)
    (folder / "README.md").write_text(model_card(record), encoding="utf-8")


def model_card(record: dict[str, Any]) -> str:
    """The ``README.md`` of a baked folder: provenance, formula, how to load and serve it."""
    circuit = record["circuit"]
    prompts = "\n".join(f"  - {role}: `{info.get('name')}` ({info.get('n')} prompts, sha256 "
                        f"`{str(info.get('sha256'))[:16]}…`)"
                        for role, info in circuit["prompts"].items())
    gguf = ""
    if record["base_source"] in ("embedded", "gguf"):
        gguf = ("\nThe base model was read from a GGUF file and is written here as float "
                "safetensors. To get a GGUF file back, run llama.cpp's converter on this "
                "folder: `python convert_hf_to_gguf.py . --outfile baked.gguf`.\n")
    return f"""---
library_name: transformers
tags: [cna-workbench, steering, baked-circuit]
---

# {record['base_model']} with a CNA circuit baked in (multiplier {record['multiplier']:g})

This folder is `{record['base_model']}` with a Contrastive Neuron Attribution circuit
applied at a fixed multiplier, written into the weights by `cna bake`. It needs no hooks
and no workbench: any engine that runs the base architecture runs it.

- Circuit: `{circuit['name']}`, {circuit['n_neurons']} neurons (signs: {record['signs']}),
  per layer {circuit['layer_counts']}; `circuit.json` beside the weights; sha256 of the
  circuit JSON `{circuit['sha256']}`.
- Prompt sets of its discovery:
{prompts}
- Multiplier {record['multiplier']:g} at every token position (0 ablates, 1 is unchanged).

**Formula.** {record['formula']}. Scaling neuron j's down-projection input by m is the
same as scaling column j of the down-projection weight by m:
`down_proj(x * s) = W @ diag(s) @ x + b`.
{gguf}
## Load and serve

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")
tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")
```

```bash
vllm serve path/to/this/folder
docker run -v $PWD/path/to/this/folder:/model ghcr.io/huggingface/text-generation-inference --model-id /model
```

The same provenance is stored as JSON in the safetensors header metadata under
`{METADATA_KEY}`.
"""  # noqa: E501 - the card's docker command is one shell line
