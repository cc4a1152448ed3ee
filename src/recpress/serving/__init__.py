"""Serving: artifacts (data only, checksummed), export with parity checks, quantisation, a CPU
top-K recommender, an efficiency profile, and the HTTP app (optional extra ``serve``)."""

from recpress.serving.artifact import Artifact, ArtifactError, load_artifact
from recpress.serving.recommender import (
    Recommendations,
    TopKRecommender,
    UnknownUserError,
)

__all__ = [
    "Artifact",
    "ArtifactError",
    "Recommendations",
    "TopKRecommender",
    "UnknownUserError",
    "load_artifact",
]
