"""The advisor: measure a dataset's size and its similarity to a backbone's source data, plan
the transfer strategy from those measurements, and rank candidate backbones.

- ``advise(dataset, backbone, store_dir=...) -> Advice`` (``plan.py``)
- ``rank_backbones(dataset, specs, store_dir=...) -> list[dict]`` (``rank.py``)
- ``measure_similarity`` / ``Similarity`` (``similarity.py``), ``measure_size`` / ``SizeProfile``
  (``size.py``), transferability scores (``transferability.py``).
"""

from __future__ import annotations

from .plan import Advice, advise
from .rank import rank_backbones
from .rules import decide, table_answer
from .similarity import SIMILAR_THRESHOLD, Similarity, measure_similarity
from .size import SizeProfile, measure_size
from .transferability import (
    knn_accuracy,
    leep,
    logme,
    normalized_leep,
    probe_accuracy,
    source_entropy,
    source_mutual_information,
)

__all__ = [
    "SIMILAR_THRESHOLD",
    "Advice",
    "Similarity",
    "SizeProfile",
    "advise",
    "decide",
    "knn_accuracy",
    "leep",
    "logme",
    "measure_similarity",
    "measure_size",
    "normalized_leep",
    "probe_accuracy",
    "rank_backbones",
    "source_entropy",
    "source_mutual_information",
    "table_answer",
]
