"""Evaluation: benchmarks, refusal, quality and KL-drift metrics, MMLU, the StrongREJECT judge,
controls and sweeps. Results are plain numbers or pandas DataFrames.

Example:
    >>> from workbench.evaluation import is_refusal, quality
    >>> is_refusal("I'm sorry, but I can't help with that."), quality("a b c d a b c d")
    (True, 0.8)
"""

from .benchmarks import BENCHMARKS, MMLUQuestion, load_benchmark, mmlu_subjects
from .drift import HarmlessDrift
from .interventions import Intervention, random_control
from .judge import JudgeConfig, StrongRejectJudge, judge_configured, summarise_judgements
from .mmlu import MMLUResult, mmlu
from .quality import mean_quality, quality
from .refusal import classifier_report, is_refusal, refusal_match, refusal_rate
from .sweep import summary, sweep

__all__ = [
    "BENCHMARKS",
    "HarmlessDrift",
    "Intervention",
    "JudgeConfig",
    "MMLUQuestion",
    "MMLUResult",
    "StrongRejectJudge",
    "classifier_report",
    "is_refusal",
    "judge_configured",
    "load_benchmark",
    "mean_quality",
    "mmlu",
    "mmlu_subjects",
    "quality",
    "random_control",
    "refusal_match",
    "refusal_rate",
    "summarise_judgements",
    "summary",
    "sweep",
]
