"""Errors of the segmentation package; all are :class:`segstream.errors.ModelError` subclasses."""

from __future__ import annotations

from segstream.errors import ModelError

__all__ = ["ArtifactInvalid", "ArtifactNotFound", "FeatureError", "ModelError", "TrainingError"]


class ArtifactNotFound(ModelError):
    """No model artifact with the requested version (or no current model) in the store named."""


class ArtifactInvalid(ModelError):
    """A model artifact exists but cannot be parsed or fails its consistency checks."""


class FeatureError(ModelError):
    """Input data lacks a column (or has values) the feature builder needs."""


class TrainingError(ModelError):
    """Training cannot produce a model from the given data and options."""
