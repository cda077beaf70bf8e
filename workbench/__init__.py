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

__version__ = "0.1.0"

from .architectures import ArchitectureAdapter, register_adapter, supported_model_types
from .circuit import Circuit, Neuron, Overlap, overlap
from .cna import discover
from .embedded import EMBEDDED, DEFAULT_MODEL
from .errors import WorkbenchError
from .models import WorkbenchModel, from_hf, load_model
from .prompts import PromptSet, Prompting
from .steering import add_vector, caa_vector, generate, steer

__all__ = [
    "ArchitectureAdapter",
    "Circuit",
    "DEFAULT_MODEL",
    "EMBEDDED",
    "Neuron",
    "Overlap",
    "PromptSet",
    "Prompting",
    "WorkbenchError",
    "WorkbenchModel",
    "__version__",
    "add_vector",
    "caa_vector",
    "discover",
    "from_hf",
    "generate",
    "load_model",
    "overlap",
    "register_adapter",
    "steer",
    "supported_model_types",
]
