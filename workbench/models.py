"""Load a model from anywhere and wrap it in one object used by the whole workbench.

Sources: an embedded name (``smollm2-135m-instruct``, ``gemma-3-270m``), a hub id or a
local ``from_pretrained`` folder, a GGUF file, or an already-loaded transformers model
(:func:`from_hf`). Defaults: float32 on CPU; bfloat16 on a GPU.

Example:
    >>> from workbench import load_model
    >>> model = load_model("smollm2-135m-instruct")  # doctest: +SKIP
    >>> model.n_layers, model.d_mlp                  # doctest: +SKIP
    (30, 1536)
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import torch

from .adapter_files import check_lora_adapter
from .architectures import (
    ArchitectureAdapter,
    adapter_for_model_type,
    find_layers_path,
    get_path,
    mlp_width,
)
from .embedded import (
    DEFAULT_MODEL,
    EMBEDDED,
    adapter_dir,
    build_cache,
    cache_dir,
    cached_weights_dir,
    ensure_cached,
)
from .errors import InvalidArgumentError, ModelLoadError, PromptTooLongError, WorkbenchError
from .model_files import check_gguf, check_model_folder
from .prompts import ChatTemplateChoice, Prompting, format_prompts, resolve_prompting
from .remote import Remote, check_ready, check_remote
from .weight_delta import DELTA_FILE, apply_delta, load_delta

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass(eq=False)
class WorkbenchModel:
    """A transformers causal LM, its tokenizer, and where its MLP neurons live.

    Build it with :func:`load_model` or :func:`from_hf`. ``hf_model`` and ``tokenizer``
    are the plain transformers objects; use them freely.
    """

    hf_model: PreTrainedModel
    tokenizer: Any
    name: str
    adapter: ArchitectureAdapter
    source: str = "object"
    #: Where traced calls run: here (False), on NDIF (True) or nnsight's simulation ("local").
    remote: Remote = False
    #: Edits that :func:`workbench.sites.edited` records on a remote model for its traced calls.
    edits: list = field(default_factory=list, repr=False)
    #: Per-model memo of activation statistics (e.g. of the universal-filter prompts).
    stats_cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.layers_path = find_layers_path(self.hf_model, self.adapter)

    # -- shape ---------------------------------------------------------------

    @property
    def architecture(self) -> str:
        """The transformers class name, e.g. ``LlamaForCausalLM``."""
        return type(self.hf_model).__name__

    @property
    def config(self) -> Any:
        return self.hf_model.config

    @property
    def layers(self) -> torch.nn.ModuleList:
        return get_path(self.hf_model, self.layers_path)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def d_mlp(self) -> int:
        return mlp_width(self.down_proj(0))

    @property
    def text_config(self) -> Any:
        """The config of the language model: the config itself, or a multimodal wrapper's
        ``text_config`` (Gemma 3), where the widths, context and sliding windows are."""
        config = self.config
        return config.get_text_config() if hasattr(config, "get_text_config") else config

    @property
    def d_model(self) -> int:
        """Width of the residual stream (``hidden_size`` of the text config)."""
        return int(self.text_config.hidden_size)

    @property
    def n_neurons(self) -> int:
        """All MLP neurons of all layers: ``n_layers * d_mlp``."""
        return self.n_layers * self.d_mlp

    @property
    def device(self) -> torch.device:
        """Device of the input embeddings (where inputs must go; the CPU for NDIF)."""
        if self.remote is True:
            return torch.device("cpu")
        return cast(torch.Tensor, self.hf_model.get_input_embeddings().weight).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf_model.parameters()).dtype

    @property
    def context_length(self) -> int | None:
        """Longest input, in tokens, the model accepts (None if unknown)."""
        value = getattr(self.text_config, "max_position_embeddings", None)
        return int(value) if value else None

    def down_proj(self, layer: int) -> torch.nn.Module:
        """The MLP down-projection module of block ``layer``."""
        return get_path(self.layers[layer], self.adapter.down_proj)

    def down_proj_path(self, layer: int) -> str:
        """Dotted path of block ``layer``'s down-projection from the top-level model."""
        return f"{self.layers_path}.{layer}.{self.adapter.down_proj}"

    def info(self) -> dict[str, Any]:
        """Identity recorded in circuits: name, architecture, n_layers, d_mlp."""
        return {"name": self.name, "architecture": self.architecture,
                "n_layers": self.n_layers, "d_mlp": self.d_mlp}

    # -- nnsight -------------------------------------------------------------

    @functools.cached_property
    def nnsight(self) -> Any:
        """An ``nnsight.TransformersModel`` wrapping this same model (built on first use)."""
        import nnsight

        return nnsight.TransformersModel(self.hf_model, tokenizer=self.tokenizer)

    def envoy(self, dotted: str) -> Any:
        """The nnsight envoy of a submodule, by dotted path from the top-level model."""
        return get_path(self.nnsight, dotted)

    # -- prompts -------------------------------------------------------------

    def prompting(self, chat_template: ChatTemplateChoice = "auto",
                  system_prompt: str | None = None) -> Prompting:
        """Resolve a formatting choice for this model's tokenizer."""
        return resolve_prompting(self.tokenizer, chat_template, system_prompt)

    def encode(self, prompts: Sequence[str], prompting: Prompting) -> dict[str, torch.Tensor]:
        """Format, tokenize and left-pad prompts; return model inputs on the model's device.

        Returns ``input_ids`` and ``attention_mask`` ``[batch, pos]`` and mask-derived
        ``position_ids`` so that a left-padded row sees the same positions as it would
        alone. Raises :class:`PromptTooLongError` for a prompt beyond the context window.
        """
        texts = format_prompts(self.tokenizer, prompts, prompting)
        encoded = self.tokenizer(
            texts, return_tensors="pt", padding=True, padding_side="left",
            add_special_tokens=not prompting.chat_template,
        )
        attention_mask = encoded["attention_mask"]  # [batch, pos]
        limit = self.context_length
        if limit is not None:
            lengths = attention_mask.sum(dim=1)
            too_long = (lengths > limit).nonzero().flatten().tolist()
            if too_long:
                i = too_long[0]
                raise PromptTooLongError(
                    f"prompt {i} ({prompts[i][:40]!r}...) is {int(lengths[i])} tokens after "
                    f"formatting, longer than {self.name}'s context window of {limit} tokens; "
                    "shorten or remove it"
                )
        inputs = {"input_ids": encoded["input_ids"], "attention_mask": attention_mask}
        if self.accepts("position_ids"):
            inputs["position_ids"] = position_ids(attention_mask)
        return {key: value.to(self.device) for key, value in inputs.items()}

    def last_position_only(self) -> dict[str, int]:
        """Forward kwargs that compute logits for the last position only (when supported).

        Saves the ``[batch, pos, vocab]`` unembedding when only the next token matters.
        """
        return {"logits_to_keep": 1} if self.accepts("logits_to_keep") else {}

    def accepts(self, argument: str) -> bool:
        """Whether the model's forward takes the keyword ``argument``."""
        return argument in inspect.signature(self.hf_model.forward).parameters

    def require_local(self, what: str, *, calls_the_model: bool = True) -> None:
        """Refuse ``what`` on a remote model, with what to do instead.

        Work that calls ``hf_model`` directly (``calls_the_model``) cannot run remotely,
        and would not see the edits of a ``steer`` block there; work that only reads the
        weights needs them here (not ``remote=True``).
        """
        if self.remote is True or (calls_the_model and self.remote):
            needs = "calls the model directly" if calls_the_model else "needs the weights"
            raise InvalidArgumentError(
                f"{what} {needs}, which a remote model (remote={self.remote!r}) cannot do; "
                f"load {self.name} with load_model(name) for this")

    def __repr__(self) -> str:
        where = f", remote={self.remote!r}" if self.remote else ""
        return (f"WorkbenchModel({self.name!r}, {self.architecture}, n_layers={self.n_layers}, "
                f"d_mlp={self.d_mlp}, device={self.device}, dtype={self.dtype}{where})")


# -- construction -------------------------------------------------------------


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded rows, as ``generate`` makes them: the count of real
    tokens before each token, and 1 at padding (which the mask hides anyway).

    Example:
        >>> position_ids(torch.tensor([[0, 1, 1], [1, 1, 1]])).tolist()
        [[1, 0, 1], [0, 1, 2]]
    """
    positions = mask.long().cumsum(dim=-1) - 1  # [batch, pos]
    return positions.masked_fill(mask == 0, 1)


def from_hf(model: PreTrainedModel, tokenizer: Any, *, name: str | None = None,
            source: str = "object", remote: Literal[False, "local"] = False) -> WorkbenchModel:
    """Wrap an already-loaded transformers causal LM and its tokenizer.

    The model is put in eval mode; a tokenizer without a pad token gets its EOS token
    as pad token. Raises :class:`UnsupportedArchitectureError` for an unknown family.
    ``remote="local"`` runs every traced call through nnsight's local simulation of NDIF
    (a model in memory cannot run on NDIF itself: use ``load_model(name, remote=True)``).

    Example:
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> hf = LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, hidden_size=32,
        ...     intermediate_size=64, num_attention_heads=2, num_key_value_heads=2,
        ...     vocab_size=100))
        >>> class Tok: chat_template = None; pad_token = "<pad>"
        >>> from_hf(hf, Tok(), name="tiny").d_mlp
        64
    """
    config = model.config
    adapter = adapter_for_model_type(getattr(config, "model_type", "?"), type(model).__name__)
    if getattr(tokenizer, "pad_token", None) is None and getattr(tokenizer, "eos_token", None):
        tokenizer.pad_token = tokenizer.eos_token
    if check_remote(remote) is True:
        raise InvalidArgumentError(
            "from_hf wraps a model in memory, which cannot run on NDIF: use "
            "load_model(hub_id, remote=True), or remote='local' for the local simulation")
    model.eval()
    name = name or getattr(config, "name_or_path", None) or type(model).__name__
    return WorkbenchModel(model, tokenizer, name=name, adapter=adapter, source=source,
                          remote=remote)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str | torch.device) -> torch.dtype:
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def load_model(name_or_path: str | Path = DEFAULT_MODEL, *, gguf_file: str | None = None,
               dtype: torch.dtype | str | None = None, device: str | None = None,
               device_map: str | dict | None = None, remote: Remote = False,
               **from_pretrained_kwargs: Any) -> WorkbenchModel:
    """Load a causal LM by embedded name, hub id, local folder, or GGUF file.

    Args:
        name_or_path: an embedded name (see ``cna models``), a hub id such as
            ``meta-llama/Llama-3.2-1B-Instruct``, a local folder, or a ``.gguf`` file.
        gguf_file: the GGUF file name inside ``name_or_path`` (folder or hub repo).
        dtype: torch dtype or its name; default float32 on CPU, bfloat16 on GPU.
        device: ``"cpu"``, ``"cuda"``, ...; default: ``device_map="auto"`` when a GPU
            is available, else the CPU.
        device_map: passed to ``from_pretrained`` (``"auto"`` spreads a large model
            over the GPUs); when given, ``device`` is ignored.
        remote: ``True`` runs every traced call on NDIF (see :mod:`workbench.remote`):
            only the config and tokenizer are loaded, the weights stay on the server.
            ``"local"`` loads the model here and runs each call through nnsight's local
            simulation of NDIF.

    GGUF weights are de-quantised once and cached as safetensors, so later loads are fast.

    Example:
        >>> model = load_model("smollm2-135m-instruct")  # doctest: +SKIP
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    remote = check_remote(remote)
    if remote is True:
        return _load_on_ndif(str(name_or_path))
    if device is None and device_map is None and torch.cuda.is_available():
        device_map = "auto"
    device = device or default_device()
    dtype = _resolve_dtype(dtype) or default_dtype(device)
    name = str(name_or_path)
    source = "hub-or-local"
    location: str | Path
    if name in EMBEDDED:
        location, source = _embedded_weights(name), "embedded"
        _check_cache(Path(location))
    elif name.endswith(".gguf") or gguf_file:
        gguf_path = Path(name) / gguf_file if gguf_file else Path(name)
        location, source = _gguf_cache(gguf_path, name, gguf_file), "gguf"
        _check_cache(Path(location))
    else:
        location = name
        if Path(name).is_dir():
            check_model_folder(name)
            source = "local"
        elif Path(name).exists():
            raise ModelLoadError(
                f"{name!r} is a file, not a model folder; give the folder that holds its "
                "config.json, or a GGUF file by a name ending in .gguf")
    kwargs = {"dtype": dtype, **from_pretrained_kwargs}
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(location)
    # What the checks above cannot see (a weight of the wrong shape, an unreadable
    # tokenizer, no network for a hub id) surfaces as many exception types from deep in
    # transformers, safetensors or torch: each means this model cannot be loaded.
    except Exception as exc:
        if isinstance(exc, WorkbenchError):
            raise
        raise ModelLoadError(
            f"could not load {name!r}: {_first_line(exc)} — give an embedded name "
            f"({', '.join(EMBEDDED)}), a local from_pretrained folder, a .gguf file, or a hub id "
            "(hub ids need network access or a populated Hugging Face cache)"
        ) from None
    if device_map is None:
        hf_model.to(device)  # type: ignore[arg-type]  # transformers' wrapper hides `self`
    return from_hf(hf_model, tokenizer, name=name, source=source, remote=remote)


def _load_on_ndif(name: str) -> WorkbenchModel:
    """A model hosted on NDIF: its config, tokenizer and weightless (meta) modules."""
    import nnsight
    from transformers import AutoTokenizer

    check_ready(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        # dispatch=False (the default): meta tensors, no weights
        wrapped = nnsight.TransformersModel(name, task="text-generation", tokenizer=tokenizer)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"could not read the config and tokenizer of {name!r}: {str(exc).splitlines()[0]}"
            " (a hub id needs network access or a populated Hugging Face cache)") from None
    model = from_hf(wrapped._module, wrapped.tokenizer, name=name, source="ndif")
    model.remote = True
    model.__dict__["nnsight"] = wrapped  # the cached ``nnsight`` property: keep this one
    return model


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype):
        raise InvalidArgumentError(
            f"unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16' or 'float16'")
    return resolved


def _convert_gguf(gguf_path: Path, out: Path) -> None:
    """De-quantise a GGUF file and write a float32 ``from_pretrained`` folder to ``out``."""
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    check_gguf(gguf_path)  # a truncated or corrupted file: one line, before transformers
    folder, file_name = str(gguf_path.parent), gguf_path.name
    verbosity = hf_logging.get_verbosity()
    # transformers logs a many-line table of missing or mismatched tensors before it raises;
    # the error below says the same in one line.
    hf_logging.set_verbosity_error()
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file_name,
                                                     dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file_name)
    # A well-formed GGUF file transformers cannot map (an unsupported architecture, missing
    # tensors or tokenizer keys) fails with many exception types: each means it cannot load.
    except Exception as exc:
        reason = _first_line(exc)
        if "above report" in reason:  # the table it points to was not printed
            reason = "its tensors do not match the model its metadata describes"
        raise ModelLoadError(f"could not read GGUF file {str(gguf_path)!r}: {reason} (a GGUF "
                             "file of a model transformers can read is needed)") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    out.mkdir(parents=True, exist_ok=True)
    # The weights are plain float tensors now; drop the GGUF marker so the folder loads
    # as an ordinary checkpoint.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    save_model(model, str(out / "model.safetensors"))  # handles tied embeddings
    tokenizer.save_pretrained(out)


def _first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message, or its type name."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _check_cache(folder: Path) -> None:
    """Check a weight cache folder the workbench wrote; say how to rebuild a damaged one."""
    try:
        check_model_folder(folder)
    except ModelLoadError as exc:
        raise ModelLoadError(f"the cached weights are damaged ({exc}); delete {str(folder)!r} "
                             "and load the model again to rebuild them") from None


def _embedded_weights(name: str) -> Path:
    """The cached float weights of an embedded model, built on first use."""
    entry = EMBEDDED[name]
    if entry.base is None:
        return build_cache(name, _convert_gguf)
    base = _embedded_weights(entry.base)
    return ensure_cached(cached_weights_dir(name),
                         lambda out: _merge_adapter(base, adapter_dir(name), out))


def _merge_adapter(base: Path, adapter: Path, out: Path) -> None:
    """Write ``base`` with the adapter folder ``adapter`` merged in to ``out``.

    The folder holds a LoRA adapter (merged with peft) or a late-MLP weight delta (added).
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (adapter / DELTA_FILE).is_file():
        check_lora_adapter(adapter)  # load_delta checks a weight delta itself
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if (adapter / DELTA_FILE).is_file():
        apply_delta(model, load_delta(adapter))
        merged = model
    else:
        merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)


def _gguf_cache(gguf_path: Path, name: str, gguf_file: str | None) -> Path:
    """Cache folder of a user's GGUF file (keyed by path, size and mtime)."""
    if not gguf_path.is_file():
        if gguf_file and not Path(name).exists():
            raise ModelLoadError(
                f"GGUF file {gguf_file!r} in hub repo {name!r}: download it first "
                "(huggingface-cli download) and pass the local .gguf path"
            )
        raise ModelLoadError(f"GGUF file {str(gguf_path)!r} does not exist")
    resolved = gguf_path.resolve()
    stat = resolved.stat()
    key = hashlib.sha256(f"{resolved}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    target = cache_dir() / "gguf" / f"{gguf_path.stem}-{key[:12]}"
    return ensure_cached(target, lambda out: _convert_gguf(gguf_path, out))
