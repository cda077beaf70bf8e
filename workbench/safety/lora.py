"""The safety-tuning recipe: LoRA on all linear layers, seeded, with a manifest.

``safety_tune(out_dir)`` builds the data (:mod:`workbench.safety.data`), fine-tunes the
embedded ``smollm2-135m-instruct`` with a LoRA adapter (peft), saves the adapter as
safetensors and writes ``manifest.json`` (recipe version, seeds, data hashes,
hyper-parameters, training loss). The model passed in is left unchanged: the LoRA layers
are removed again after saving.

Example:
    >>> from workbench.safety import Recipe, safety_tune
    >>> manifest = safety_tune("adapters/smollm2-135m-safety", recipe=Recipe())  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..adapter_files import LORA_CONFIG, LORA_WEIGHTS, check_lora_adapter
from ..errors import ModelLoadError
from ..generation import generate
from ..io import atomic_write_bytes, atomic_write_text
from ..models import WorkbenchModel, from_hf, load_model
from ..outputs import check_output
from ..prompts import Prompting, bundled_dir, format_prompts
from ..weight_delta import DELTA_FILE, save_delta
from .batching import batches, total_steps
from .data import SAFETY_DIR, SafetyData, build_data
from .late_mlp import (
    LATE_MLP_RECIPE_VERSION,
    LateMlpRecipe,
    confined_neurons,
    delta_summary,
    load_tuned_delta,
    train_late_mlp,
)
from .metrics import LATE_TARGETS, TARGETS, safety_metrics

RECIPE_VERSION = "2"


@dataclass(frozen=True)
class Recipe:
    """Hyper-parameters of the recipe (all recorded in the manifest)."""

    seed: int = 0
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    learning_rate: float = 3e-4
    epochs: int = 1
    batch_size: int = 8
    max_length: int = 160
    max_steps: int | None = None
    benign_new_tokens: int = 64
    overlap_threshold: float = 0.5
    # Seeded subsets that keep the run within 30 minutes on 2 CPU cores (None: all).
    n_harmful: int | None = 300
    n_benign: int | None = 900


def encode_pair(model: WorkbenchModel, prompt: str, response: str,
                prompting: Prompting, max_length: int,
                cut_at: int | None = None) -> tuple[list[int], list[int]]:
    """Token ids of prompt + response (+ EOS), and labels that score only the response.

    A response of ``cut_at`` tokens or more was cut off by the generation limit, so it
    gets no EOS: the model should not learn to stop mid-sentence.
    """
    tokenizer = model.tokenizer
    text = format_prompts(tokenizer, [prompt], prompting)[0]
    prompt_ids = tokenizer(text, add_special_tokens=not prompting.chat_template)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if cut_at is None or len(response_ids) < cut_at:
        response_ids = response_ids + [tokenizer.eos_token_id]
    ids = (prompt_ids + response_ids)[:max_length]
    labels = ([-100] * len(prompt_ids) + response_ids)[:max_length]
    return ids, labels


def encode_examples(model: WorkbenchModel, data: SafetyData, max_length: int,
                    benign_new_tokens: int) -> list[tuple[list[int], list[int]]]:
    """Every training pair of ``data`` encoded (shuffled with the data's seed)."""
    prompting = model.prompting()
    # A benign answer within a token or two of the generation limit was cut off there.
    return [encode_pair(model, p, r, prompting, max_length, cut_at=benign_new_tokens - 1)
            for p, r in data.examples()]


def train_lora(model: WorkbenchModel, data: SafetyData, recipe: Recipe,
               progress: bool = True) -> tuple[Any, list[float]]:
    """Wrap ``model.hf_model`` with LoRA on all linear layers and train on ``data``.

    Returns the peft model (call ``.unload()`` to get the base model back) and the loss
    of every step.
    """
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(recipe.seed)
    rng = random.Random(recipe.seed)
    encoded = encode_examples(model, data, recipe.max_length, recipe.benign_new_tokens)
    config = LoraConfig(r=recipe.rank, lora_alpha=recipe.alpha, lora_dropout=recipe.dropout,
                        target_modules="all-linear", task_type="CAUSAL_LM")
    peft_model = get_peft_model(model.hf_model, config)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad],
                                  lr=recipe.learning_rate)
    total = total_steps(len(encoded), recipe.batch_size, recipe.epochs, recipe.max_steps)
    losses: list[float] = []
    device = model.device
    peft_model.train()
    try:
        with tqdm(total=total, desc="LoRA safety tuning", unit="step",
                  disable=not progress) as bar:
            for _epoch in range(recipe.epochs):
                for input_ids, mask, labels in batches(encoded, recipe.batch_size,
                                                        model.tokenizer.pad_token_id, rng):
                    if len(losses) >= total:
                        break
                    loss = peft_model(input_ids=input_ids.to(device),
                                      attention_mask=mask.to(device),
                                      labels=labels.to(device)).loss
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad()
                    losses.append(float(loss.detach()))
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses[-1]:.3f}")
    finally:
        peft_model.eval()
    return peft_model, losses


def data_hashes() -> dict[str, str]:
    """sha256 of every data file the recipe reads, by path relative to ``prompts/``."""
    root = bundled_dir()
    files = sorted((root / SAFETY_DIR).glob("*.txt")) + [
        root / name for name in ("advbench.csv", "jbb-harmful.csv", "jbb-benign.csv",
                                 "strongreject.csv")]
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in files}


def save_adapter(peft_model: Any, out_dir: Path, base_name: str) -> None:
    """Save the LoRA adapter with its weights in float16 (half the size, same behaviour).

    The config names the base model by ``base_name`` rather than a local cache path.
    """
    from safetensors.torch import load_file, save

    peft_model.save_pretrained(out_dir)
    (out_dir / "README.md").unlink(missing_ok=True)  # peft's empty model-card template
    config_path = out_dir / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base_name
    atomic_write_text(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    weights = out_dir / "adapter_model.safetensors"
    tensors = {k: v.to(torch.float16) for k, v in load_file(weights).items()}
    atomic_write_bytes(weights, save(tensors, metadata={"format": "pt"}))  # never half-written


def load_tuned(model: WorkbenchModel, adapter: str | Path, name: str | None = None,
               ) -> WorkbenchModel:
    """A copy of ``model`` with a recipe's output folder merged in.

    The folder holds either a LoRA adapter (this module's recipe) or a weight delta
    (:mod:`workbench.safety.late_mlp`).
    """
    from peft import PeftModel

    if (Path(adapter) / DELTA_FILE).is_file():
        return load_tuned_delta(model, adapter, name)
    check_lora_adapter(adapter)
    try:
        merged = PeftModel.from_pretrained(copy.deepcopy(model.hf_model),
                                           str(adapter)).merge_and_unload()
    # An adapter whose files are sound but made for another model (other layers, another
    # rank than its weights) fails inside peft with many exception types.
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise ModelLoadError(f"the LoRA adapter in {str(adapter)!r} does not fit "
                             f"{model.name} ({reason}); use the model it was trained on") from None
    return from_hf(merged, model.tokenizer, name=name or f"{model.name}+{Path(adapter).name}")


def safety_tune(out_dir: str | Path, *, model: WorkbenchModel | None = None,
                recipe: Recipe | LateMlpRecipe = Recipe(), evaluate: bool = True,
                mmlu_n: int | None = 500, progress: bool = True,
                data: SafetyData | None = None, force: bool = False) -> dict[str, Any]:
    """Run a recipe and write its weights and ``manifest.json`` to ``out_dir``.

    ``out_dir`` is checked before any work: it must be a folder that can be created, and
    an existing one must be empty unless ``force`` (then the recipe's files in it are
    replaced, and those of the other recipe removed, so the folder holds one result).

    ``recipe`` is a :class:`Recipe` (LoRA on all linear layers, written as an adapter) or
    a :class:`~workbench.safety.late_mlp.LateMlpRecipe` (the late MLPs only, written as a
    weight delta). ``data`` reuses pairs already built for the same seed and subsets
    (the self-distilled answers take minutes); by default they are built here. With
    ``evaluate`` the tuned model's targets (:mod:`workbench.safety.metrics`) are measured
    afterwards and written into the manifest's ``metrics``.
    """
    out_dir = check_output(out_dir, kind="folder", existing="replace" if force else "refuse")
    model = model or load_model("smollm2-135m-instruct")
    started = time.perf_counter()
    if data is None:
        data = build_data(
            lambda prompts: generate(model, prompts, max_new_tokens=recipe.benign_new_tokens,
                                     batch_size=32, progress=progress),
            seed=recipe.seed, overlap_threshold=recipe.overlap_threshold,
            n_harmful=recipe.n_harmful, n_benign=recipe.n_benign)
    data_seconds = time.perf_counter() - started
    if isinstance(recipe, LateMlpRecipe):
        encoded = encode_examples(model, data, recipe.max_length, recipe.benign_new_tokens)
        allowed = confined_neurons(model, data, recipe)
        deltas, losses = train_late_mlp(model, encoded, recipe, progress=progress,
                                        allowed=allowed)
        _remove_stale(out_dir, (LORA_CONFIG, LORA_WEIGHTS))
        save_delta(deltas, out_dir, {"base_model": model.name,
                                     "recipe_version": LATE_MLP_RECIPE_VERSION})
        head = {"format": "cna-workbench.safety-delta",
                "recipe_version": LATE_MLP_RECIPE_VERSION, "recipe": "late-mlp",
                "weight_change": delta_summary(deltas, model.layers_path,
                                               recipe.tuned_layers(model.n_layers)),
                "confined_to": None if allowed is None else [list(n) for n in allowed]}
    else:
        peft_model, losses = train_lora(model, data, recipe, progress=progress)
        _remove_stale(out_dir, (DELTA_FILE,))
        try:
            save_adapter(peft_model, out_dir, model.name)
        finally:
            peft_model.unload()  # remove the LoRA layers: the caller's model is unchanged
        head = {"format": "cna-workbench.safety-adapter", "recipe_version": RECIPE_VERSION}
    manifest = {
        **head,
        "base_model": model.name,
        "hyperparameters": json.loads(json.dumps(asdict(recipe))),  # tuples as lists
        "data": {
            "n_harmful": len(data.harmful), "n_benign": len(data.benign),
            "n_removed_for_overlap": len(data.removed),
            "pairs_sha256": data.sha256(), "files_sha256": data_hashes(),
        },
        "training": {
            "steps": len(losses), "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
            "data_seconds": round(data_seconds, 1),
            "total_seconds": round(time.perf_counter() - started, 1),
            "device": str(model.device), "torch_threads": torch.get_num_threads(),
        },
        "metrics": {},
    }
    write_manifest(out_dir, manifest)
    if evaluate:
        tuned = load_tuned(model, out_dir)
        # the controlled variant's targets include its gate, which is then measured too
        targets = LATE_TARGETS if isinstance(recipe, LateMlpRecipe) else TARGETS
        manifest["metrics"] = safety_metrics(tuned, model, unused_benign=data.unused_benign,
                                             mmlu_n=mmlu_n, progress=progress, targets=targets)
        write_manifest(out_dir, manifest)
    return manifest


def _remove_stale(out_dir: Path, names: tuple[str, ...]) -> None:
    """Delete the other recipe's files from a folder being replaced (``force``)."""
    for name in names:
        (out_dir / name).unlink(missing_ok=True)


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    atomic_write_text(out_dir / "manifest.json", json.dumps(manifest, indent=2) + "\n")
