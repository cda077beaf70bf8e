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

Any :class:`workbench.sites.Edit` with a weight equivalent bakes the same way
(:func:`bake_edit`), so every intervention kind does (``bake(model, intervention, m)``):

- neuron factors scale the down-projection's input columns, as above;
- a vector added to the down-projection's output goes into its bias (refused when the
  layer has none: adding a bias would change the architecture); one added to the residual
  stream entering block ``l > 0`` goes into the bias of the last write before it (block
  ``l - 1``'s MLP output); block 0's input is refused (some families scale the
  embeddings after the lookup, so no embedding row would carry the vector as it is);
- a direction projection (:func:`workbench.ablation.scale_direction`) becomes
  ``W <- (I - (1 - m) r r^T) W`` on the output side of every linear layer that writes
  into the residual stream (each attention's output projection and each MLP's
  down-projection, their biases alike) and on every embedding row added to the stream
  (tied input/output embeddings are untied first, so the unembedding stays as it was).
  Families that normalise each branch after it (Gemma-2/3, OLMo-2) write through a norm,
  whose output has no weight equivalent: refused.

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
from typing import Any, Protocol, cast

import torch
from safetensors.torch import load_file, save_file

from .architectures import get_path, input_axis
from .circuit import Circuit
from .errors import OutputPathError, SteeringError, UnsupportedArchitectureError, WorkbenchError
from .models import WorkbenchModel, from_hf
from .outputs import check_output
from .sites import Edit, Projection, residual_writers
from .steering import circuit_edit
from .values import Signs, check_multiplier, check_positions_signs

#: key of the provenance JSON in the safetensors header metadata
METADATA_KEY = "cna_workbench.bake"
CIRCUIT_FILE = "circuit.json"


class BakeError(WorkbenchError):
    """A circuit cannot be baked into this model, or the output folder is not usable."""


class Editing(Protocol):
    """Anything that says how it changes a model at a multiplier: every intervention kind
    of :mod:`workbench.evaluation.interventions`."""

    def edit(self, model: WorkbenchModel, multiplier: float) -> Edit: ...


def bake(model: WorkbenchModel, circuit: Circuit | Editing, multiplier: float, *,
         signs: Signs = "all", positions: str = "all") -> WorkbenchModel:
    """A new model whose weights apply ``circuit`` at ``multiplier``; ``model`` is untouched.

    Args:
        circuit: a :class:`~workbench.circuit.Circuit`, or any intervention
            (:class:`~workbench.evaluation.interventions.Intervention`: a CAA vector, a
            direction, ...), baked through its :class:`~workbench.sites.Edit`
            (:func:`bake_edit`).
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
    _check_every_position(positions)
    if not isinstance(circuit, Circuit):
        if signs != "all":
            raise BakeError(f"signs={signs!r} applies to a circuit; an intervention is baked "
                            "as its own edit (choose its neurons when you build it)")
        return bake_edit(model, circuit.edit(model, value))
    check_positions_signs(positions, signs)
    circuit.check_model(model)
    if not circuit.by_layer(signs):
        raise BakeError(f"the circuit has no neurons with signs={signs!r}; nothing to bake")
    return bake_edit(model, circuit_edit(model, circuit, value, signs=signs))


def _check_every_position(positions: object) -> None:
    if positions != "all":
        raise SteeringError(f"positions={positions!r} cannot be baked: a weight acts on every "
                            "position, so only positions='all' has a weight equivalent")


def bake_edit(model: WorkbenchModel, edit: Edit) -> WorkbenchModel:
    """A new model whose weights make ``edit`` at every position; ``model`` is untouched.

    See the module docstring for how each part of an edit becomes weights, and what is
    refused (:class:`BakeError`).

    Example:
        >>> from workbench.sites import Edit
        >>> baked = bake_edit(model, Edit(scales={1: factor}))          # doctest: +SKIP
    """
    model.require_local("bake", calls_the_model=False)
    _check_every_position(edit.positions)
    if edit.scales or edit.additions:
        _refuse_shared_down_projections(model)
    if edit.projection is not None:
        _output_linears(model)  # refuses families whose writes are not linear outputs
    _weights_to_change(model, edit)  # every refusal before the copy
    baked = from_hf(copy.deepcopy(model.hf_model), model.tokenizer, name=f"{model.name}-baked",
                    source=model.source)
    scaled, biases, residual = _weights_to_change(baked, edit)
    with torch.no_grad():
        for (weight, axis), factor in zip(scaled, edit.scales.values(), strict=True):
            shape = (1, -1) if axis == 1 else (-1, 1)  # down_proj(x * factor): input columns
            weight.mul_(factor.to(weight.device, weight.dtype).view(shape))
        for bias, delta in zip(biases, edit.additions.values(), strict=True):
            if bias is not None:  # down_proj(x) + delta: the vector joins the bias
                bias.add_(delta.to(bias.device, bias.dtype))
        if edit.projection is not None:
            _project_writes(baked, edit.projection)
        for bias, vector in zip(residual, edit.residual_additions.values(), strict=True):
            bias.add_(vector.to(bias.device, bias.dtype))
    return baked


def _weights_to_change(model: WorkbenchModel, edit: Edit) -> tuple[
        list[tuple[torch.Tensor, int]], list[torch.Tensor | None], list[torch.Tensor]]:
    """The tensors of ``model`` that ``edit``'s scales, additions and residual additions
    change, in the edit's order; raises :class:`BakeError` where one has no weight form."""
    scaled = []
    for layer in edit.scales:
        what = f"the down-projection of layer {layer}"
        module = model.down_proj(layer)
        scaled.append((_weight(module, what), _input_axis(module, what)))
    biases = [_down_proj_bias(model, layer, delta) for layer, delta in edit.additions.items()]
    residual = [_residual_bias(model, layer) for layer in edit.residual_additions]
    return scaled, biases, residual


def _weight(module: torch.nn.Module, what: str) -> torch.Tensor:
    """A layer's float weight (a Parameter, which torch types as Tensor | Module)."""
    weight = cast(torch.Tensor, module.weight)
    if not weight.dtype.is_floating_point:
        raise BakeError(f"{what} has {weight.dtype} weights (quantised?); load the model in "
                        "float16/bfloat16/float32 to bake it")
    return weight


def _input_axis(module: torch.nn.Module, what: str) -> int:
    try:
        return input_axis(module)
    except UnsupportedArchitectureError:
        raise BakeError(f"cannot tell which weight axis of {type(module).__name__} ({what}) "
                        "holds its inputs; only nn.Linear and GPT-2's Conv1D can be baked"
                        ) from None


def _down_proj_bias(model: WorkbenchModel, layer: int,
                    delta: torch.Tensor) -> torch.Tensor | None:
    """The bias a vector added to layer ``layer``'s down-projection output joins; None when
    the vector is zero (a CAA vector at x1) and there is no bias."""
    bias = cast("torch.Tensor | None", model.down_proj(layer).bias)
    if bias is None and delta.any():
        raise BakeError(f"the down-projection of layer {layer} has no bias, so a vector added "
                        "to its output has no weight equivalent in this architecture; apply "
                        "it with add_vector() instead")
    return bias


def _residual_bias(model: WorkbenchModel, layer: int) -> torch.Tensor:
    """The bias a vector added to the residual stream entering block ``layer`` joins: the
    MLP output bias of block ``layer - 1``."""
    if layer == 0:
        raise BakeError("a vector added to the residual stream entering block 0 cannot be "
                        "baked: some families scale the embeddings after the lookup, so no "
                        "weight carries it unchanged; apply the edit without baking")
    path, linear = _output_linears(model)[2 * layer - 1]  # block layer-1's MLP write
    bias = cast("torch.Tensor | None", linear.bias)
    if bias is None:
        raise BakeError(f"{path} has no bias, so a vector added to the residual stream "
                        f"entering block {layer} has no weight equivalent in this "
                        "architecture; apply it with the edit instead")
    return bias


def _output_linears(model: WorkbenchModel) -> list[tuple[str, torch.nn.Module]]:
    """For every residual write (:func:`~workbench.sites.residual_writers`, in order), the
    linear layer whose output it is: the attention's output projection and the MLP's
    down-projection (adapter paths ``attn_proj``, ``down_proj``). Refused for a write that
    is not such an output (a norm after the branch)."""
    adapter = model.adapter
    pairs = []
    for path, _writer in residual_writers(model):
        layer, relative = path[len(model.layers_path) + 1:].split(".", 1)
        linear = adapter.attn_proj if relative == adapter.attn_out else adapter.down_proj
        if not linear.startswith(f"{relative}."):
            raise BakeError(
                f"{model.architecture} writes into the residual stream through {relative!r}, "
                f"which is not a linear layer's output ({linear!r} comes before it), so "
                "this change of the residual stream has no weight equivalent here; apply it "
                "without baking (its intervention's apply(), or scale_direction())")
        pairs.append((path, get_path(model.layers[int(layer)], linear)))
    return pairs


def _project_writes(baked: WorkbenchModel, projection: Projection) -> None:
    """Scale ``projection``'s direction in every write into the residual stream."""
    drop = 1.0 - projection.keep
    for path, linear in _output_linears(baked):
        weight = _weight(linear, path)
        r = projection.direction.to(weight.device, torch.float64)  # [d_model]
        wide = weight.to(torch.float64)
        if _input_axis(linear, path) == 1:  # [d_model, in]: rows are outputs
            wide -= drop * torch.outer(r, r @ wide)
        else:  # Conv1D [in, d_model]
            wide -= drop * torch.outer(wide @ r, r)
        weight.copy_(wide)
        bias = cast("torch.Tensor | None", linear.bias)
        if bias is not None:
            wide_bias = bias.to(torch.float64)
            bias.copy_(wide_bias - drop * (wide_bias @ r) * r)
    _untie_output_embeddings(baked)
    for embedding in _residual_embeddings(baked):
        weight = _weight(embedding, "an embedding")
        r = projection.direction.to(weight.device, torch.float64)
        wide = weight.to(torch.float64)  # [tokens, d_model]
        weight.copy_(wide - drop * torch.outer(wide @ r, r))


def _residual_embeddings(model: WorkbenchModel) -> list[torch.nn.Module]:
    """The embeddings added into the residual stream before the first block: the token
    embeddings, and position (or type) embeddings of families that have them."""
    blocks = set(map(id, model.layers.modules()))
    return [m for m in model.hf_model.modules() if isinstance(m, torch.nn.Embedding)
            and id(m) not in blocks and m.embedding_dim == model.d_model]


def _untie_output_embeddings(model: WorkbenchModel) -> None:
    """Give the unembedding its own copy of a weight it shares with the embeddings."""
    hf = model.hf_model
    output = hf.get_output_embeddings()
    shared = cast(torch.Tensor, hf.get_input_embeddings().weight)
    if output is None or cast(torch.Tensor, output.weight).data_ptr() != shared.data_ptr():
        return
    output.weight = torch.nn.Parameter(shared.detach().clone())
    for config in {id(c): c for c in (hf.config, hf.config.get_text_config())}.values():
        config.tie_word_embeddings = False


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
