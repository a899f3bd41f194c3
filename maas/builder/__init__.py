"""The build pipeline: manifest -> optimized, verified ONNX artifacts in build/<name>/<version>/."""

from .pipeline import BuildError, BuildResult, build_model, build_models, write_catalog

__all__ = ["BuildError", "BuildResult", "build_model", "build_models", "write_catalog"]
