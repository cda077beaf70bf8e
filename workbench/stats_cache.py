"""A disk cache of the universal set's activation statistics, shared between sessions.

Every discovery excludes the neurons that fire for everything, measured on the universal
prompt set (150 prompts by default). That pass costs more than the contrast itself on a
small contrast (31 s of a 36 s discovery on SmolLM2-135M with 10 prompts a side; about
150 s on Qwen2.5-Coder-0.5B-Instruct on 2 cores), and its result depends only on the
model and the prompts, so it is kept on disk under :func:`workbench.embedded.cache_dir`
``/stats`` and reused by the next discovery in any process.

The key is the SHA-256 of everything the statistics depend on:

- a fingerprint of the weights: every parameter and buffer times a fixed random probe (a
  change to any weight changes it), with its name, shape and dtype;
- the model class and its whole config, the device type, the tokenizer (vocabulary size,
  name, chat template);
- the prompts' SHA-256, how they were shown (:class:`~workbench.prompts.Prompting`) and the
  universal filter's top fraction;
- :data:`FORMAT`, raised whenever how the statistics are computed changes.

Nothing is cached for a remote model, a model in training mode, one with weights left on
``meta`` by offloading, or one with forward hooks registered (a ``with steer(...)``
block, for instance): its activations are not its weights'. A cache
file that cannot be read or does not fit is recomputed and replaced, with a warning.
``CNA_STATS_CACHE=0`` turns the cache off; ``CNA_STATS_CACHE=<folder>`` keeps it there.

Example:
    >>> from workbench import load_model, discover
    >>> model = load_model()                                              # doctest: +SKIP
    >>> discover(model, "qualitative-harmful", "qualitative-benign")      # doctest: +SKIP
    >>> # a new session: the universal pass is read from the cache
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from .activation_stats import ActivationStats
from .embedded import cache_dir
from .io import atomic_write_bytes
from .models import WorkbenchModel
from .probe import fixed_probe
from .prompts import Prompting, PromptSet

#: Raised whenever how the universal statistics are computed changes: old files are ignored.
FORMAT = 1
#: Environment variable: ``0`` (or false, no, off) turns the cache off, ``1`` or unset
#: keeps it under the workbench's cache folder, anything else is the folder to keep it in.
ENV_SWITCH = "CNA_STATS_CACHE"
_OFF = ("0", "false", "no", "off")


def enabled() -> bool:
    """Whether the disk cache is on (``CNA_STATS_CACHE`` is not ``0``)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in _OFF


def folder() -> Path:
    """Where the cached statistics live: ``CNA_STATS_CACHE`` when it names a folder, else
    ``<cache_dir()>/stats``."""
    setting = os.environ.get(ENV_SWITCH, "1").strip()
    return cache_dir() / "stats" if setting.lower() in ("", "1", "true", "yes", "on") \
        else Path(setting)


#: Rows of a weight multiplied by the probe at a time (a float64 copy of at most this many).
CHUNK_ROWS = 4096


def weights_fingerprint(model: WorkbenchModel) -> str:
    """SHA-256 of every parameter times a fixed random probe, with names, shapes, dtypes.

    One matrix-vector product per weight and buffer, on the weight's device, in chunks of
    :data:`CHUNK_ROWS` rows.

    Example:
        >>> import torch
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> from workbench.models import from_hf
        >>> hf = LlamaForCausalLM(LlamaConfig(num_hidden_layers=1, hidden_size=8,
        ...     intermediate_size=16, num_attention_heads=2, num_key_value_heads=2,
        ...     vocab_size=20))
        >>> class Tok: chat_template = None; pad_token = "<pad>"
        >>> model = from_hf(hf, Tok(), name="tiny")
        >>> before = weights_fingerprint(model)
        >>> with torch.no_grad():
        ...     _ = model.down_proj(0).weight[3, 5].add_(1e-3)
        >>> weights_fingerprint(model) == before
        False
    """
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in [*model.hf_model.named_parameters(),
                             *model.hf_model.named_buffers()]:
            values = tensor.detach()
            rows = values.reshape(values.shape[0], -1) if values.dim() > 1 \
                else values.reshape(1, -1)  # [rows, width]
            probe = fixed_probe(rows.shape[1], torch.float64).to(rows.device)  # [width]
            digest.update(f"{name}|{tuple(values.shape)}|{values.dtype}|".encode())
            for start in range(0, rows.shape[0], CHUNK_ROWS):  # bounded float64 copies
                chunk = rows[start:start + CHUNK_ROWS].to(torch.float64)  # [chunk, width]
                digest.update((chunk @ probe).cpu().numpy().tobytes())  # [chunk]
    return digest.hexdigest()


def _has_hooks(model: WorkbenchModel) -> bool:
    """Whether forward hooks (on a module, or global ones) may change its activations."""
    from torch.nn.modules import module as torch_module

    return bool(torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks
                or any(module._forward_hooks or module._forward_pre_hooks
                       for module in model.hf_model.modules()))


def cacheable(model: WorkbenchModel) -> bool:
    """Whether statistics of ``model`` may be cached (in memory or on disk): it is local,
    in eval mode, without forward hooks and with every weight loaded (none on ``meta``,
    as accelerate leaves offloaded ones)."""
    return (not model.remote and not model.hf_model.training
            and not _has_hooks(model)
            and not any(t.is_meta for t in (*model.hf_model.parameters(),
                                            *model.hf_model.buffers())))


def cache_key(model: WorkbenchModel, prompts: PromptSet, prompting: Prompting,
              top_fraction: float) -> str:
    """The file name (without suffix) of these statistics in :func:`folder`."""
    tokenizer = model.tokenizer
    template = getattr(tokenizer, "chat_template", None)
    described = {
        "format": FORMAT,
        "weights": weights_fingerprint(model),
        "class": type(model.hf_model).__name__,
        "config": model.hf_model.config.to_json_string(use_diff=False),
        "device": model.device.type,
        "tokenizer": [type(tokenizer).__name__, getattr(tokenizer, "name_or_path", None),
                      _length(tokenizer),
                      hashlib.sha256(str(template).encode()).hexdigest()],
        "prompts": prompts.sha256,
        "prompting": prompting.to_dict(),
        "top_fraction": top_fraction,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def _length(tokenizer: object) -> int | None:
    try:
        return len(tokenizer)  # type: ignore[arg-type]
    except TypeError:
        return None


def cached_stats(model: WorkbenchModel, prompts: PromptSet, prompting: Prompting,
                 top_fraction: float,
                 compute: Callable[[], ActivationStats]) -> ActivationStats:
    """The statistics from the cache when there, else ``compute()``'s, then kept.

    Computes without the cache when it is off. The caller checks :func:`cacheable` first
    (statistics of a hooked or offloaded model must not be kept).
    """
    if not enabled():
        return compute()
    try:
        key = cache_key(model, prompts, prompting, top_fraction)
    except (TypeError, ValueError, RuntimeError, NotImplementedError) as error:
        warnings.warn(f"the universal statistics of {model.name} are not cached: no key "
                      f"could be made ({type(error).__name__}: {error})".splitlines()[0],
                      stacklevel=3)
        return compute()
    path = folder() / f"{key}.pt"
    if path.is_file():
        loaded = _read(path, model, len(prompts))
        if loaded is not None:
            return loaded
    stats = compute()
    buffer = io.BytesIO()
    torch.save({"n": stats.n, "sum": stats.sum, "sum_sq": stats.sum_sq,
                "top_counts": stats.top_counts, "top_k": stats.top_k}, buffer)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as error:  # a read-only cache is not an error of the user's work
        warnings.warn(f"could not keep the universal statistics in {path} ({error}); they "
                      "will be recomputed next time", stacklevel=3)
    return stats


def _read(path: Path, model: WorkbenchModel, n_prompts: int) -> ActivationStats | None:
    """The statistics in ``path`` if they load and fit ``model``; None (with a warning)
    otherwise, so that they are recomputed and the file replaced."""
    shape = (model.n_layers, model.d_mlp)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        stats = ActivationStats(int(saved["n"]), saved["sum"], saved["sum_sq"],
                                saved["top_counts"], int(saved["top_k"]))
        fits = (stats.n == n_prompts
                and all(tuple(t.shape) == shape for t in (stats.sum, stats.sum_sq,
                                                          stats.top_counts))
                and stats.sum.dtype == stats.sum_sq.dtype == torch.float64
                and stats.top_counts.dtype == torch.int64
                and bool(torch.isfinite(stats.sum).all() and torch.isfinite(stats.sum_sq).all()))
    except Exception as error:  # noqa: BLE001 - any damage means: recompute
        fits, stats = False, None
        reason = f"{type(error).__name__}: {error}".splitlines()[0]
    else:
        reason = "it does not fit this model and prompt set"
    if fits:
        return stats
    warnings.warn(f"ignoring the cached universal statistics {path} ({reason}); recomputing "
                  "them", stacklevel=4)
    return None
