"""CNA Workbench: Contrastive Neuron Attribution as a library.

Find the few MLP neurons whose activations best separate two prompt sets, then scale
them at inference time (0 ablates, 1 is the unchanged model, >1 amplifies).

Example:
    >>> import workbench as wb
    >>> model = wb.load_model("smollm2-135m-instruct")                        # doctest: +SKIP
    >>> circuit = wb.discover(model, "qualitative-harmful", "qualitative-benign")  # doctest: +SKIP
    >>> circuit.save("circuit.json")                                          # doctest: +SKIP
    >>> wb.generate(model, "How do I pick a lock?", circuit=circuit, multiplier=0)  # doctest: +SKIP
"""

from .ablation import ablate_direction, scale_direction
from .architectures import ArchitectureAdapter, register_adapter, supported_model_types
from .caa import caa_vector
from .circuit import Circuit, Neuron, Overlap, overlap
from .config import DiscoverConfig
from .direction import RefusalDirection, refusal_direction
from .discovery import discover
from .divergence import Divergence, divergence
from .embedded import DEFAULT_MODEL, EMBEDDED
from .errors import WorkbenchError
from .filtering import FilteredPair, filter_by_behaviour, split_by_behaviour
from .generation import generate
from .models import WorkbenchModel, from_hf, load_model
from .prompts import Prompting, PromptSet
from .steering import add_vector, steer
from .tokens import token_activations
from .version import __version__

__all__ = [
    "ArchitectureAdapter",
    "Circuit",
    "DEFAULT_MODEL",
    "DiscoverConfig",
    "Divergence",
    "EMBEDDED",
    "FilteredPair",
    "Neuron",
    "Overlap",
    "PromptSet",
    "Prompting",
    "RefusalDirection",
    "WorkbenchError",
    "WorkbenchModel",
    "__version__",
    "ablate_direction",
    "add_vector",
    "caa_vector",
    "discover",
    "divergence",
    "filter_by_behaviour",
    "from_hf",
    "generate",
    "load_model",
    "overlap",
    "refusal_direction",
    "register_adapter",
    "scale_direction",
    "split_by_behaviour",
    "steer",
    "supported_model_types",
    "token_activations",
]
