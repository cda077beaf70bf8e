"""The safety-tuning recipe that makes the offline teaching pair (before / after).

See :mod:`workbench.safety.data` for the training data and what stays held out, and
:mod:`workbench.safety.lora` for the LoRA fine-tuning and its manifest, and
:mod:`workbench.safety.late_mlp` for the controlled variant that tunes only the late MLPs.
"""

from .data import SafetyData, build_data, jaccard_3gram, remove_overlaps
from .late_mlp import LateMlpRecipe, train_late_mlp
from .lora import RECIPE_VERSION, Recipe, safety_tune, train_lora

__all__ = ["RECIPE_VERSION", "LateMlpRecipe", "Recipe", "SafetyData", "build_data",
           "jaccard_3gram", "remove_overlaps", "safety_tune", "train_late_mlp", "train_lora"]
