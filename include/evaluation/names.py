"""The gates' names and profiles, importable without numpy, scipy or scikit-learn (the trigger form reads them
while the DAG file is parsed). The gates themselves are in `include.evaluation.gates`."""

from __future__ import annotations

GATE_ORDER = (
    "scoring_coverage",
    "leakage",
    "precision_recall_balance",
    "per_intent_floor",
    "bias",
    "training_balance",
    "champion_regression",
    "platform_feedback",
)
GATE_PROFILES = ("default", "strict", "lenient")  # default = strict = the specification; lenient = 0.80 floors
