"""The safety-tuning recipe that makes the offline teaching pair (before / after).

See :mod:`workbench.safety.data` for the training data and what stays held out, and
:mod:`workbench.safety.lora` for the LoRA fine-tuning and its manifest.
"""

from .data import SafetyData, build_data, jaccard_3gram, remove_overlaps
from .lora import RECIPE_VERSION, Recipe, safety_tune, train_lora

__all__ = ["RECIPE_VERSION", "Recipe", "SafetyData", "build_data", "jaccard_3gram",
           "remove_overlaps", "safety_tune", "train_lora"]
