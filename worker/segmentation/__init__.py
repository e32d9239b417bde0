"""Segmentation: features, batch K-means training, naming, assignment, online clustering.

Pure core (no Kafka, no Redis): :mod:`.features`, :mod:`.model`, :mod:`.training`,
:mod:`.profiles`, :mod:`.assign`, :mod:`.rules`, :mod:`.online`, :mod:`.synthetic`.
Adapters: :mod:`.artifacts` (files), :mod:`.artifacts_redis` and :mod:`.sources` (Redis, files),
:mod:`.plots` (PNG), :mod:`.cli` (``segstream train`` / ``segstream segments``).
See docs/segmentation.md.
"""

from worker.segmentation.assign import (
    Assignment,
    Explanation,
    ScoredBatch,
    assign,
    explain,
    ids_from_names,
    score_state,
)
from worker.segmentation.features import DEFAULT_FEATURES, RFM_FEATURES, Scaler, real_matrix
from worker.segmentation.model import KScore, SegmentModel
from worker.segmentation.online import DriftReport, OnlineKMeans
from worker.segmentation.rules import RULES_VERSION, RulesModel
from worker.segmentation.training import TrainResult, choose_k, train

__all__ = [
    "DEFAULT_FEATURES",
    "RFM_FEATURES",
    "RULES_VERSION",
    "Assignment",
    "DriftReport",
    "Explanation",
    "KScore",
    "OnlineKMeans",
    "RulesModel",
    "Scaler",
    "ScoredBatch",
    "SegmentModel",
    "TrainResult",
    "assign",
    "choose_k",
    "explain",
    "ids_from_names",
    "real_matrix",
    "score_state",
    "train",
]
