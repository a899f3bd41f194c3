"""The build pipeline: manifest -> optimized, verified ONNX artifacts in build/<name>/<version>/.

Imported lazily: `maas.builder.tasks` (which the manifest reads) must not pull in onnx.
"""

_PIPELINE = ("BuildError", "BuildResult", "build_model", "build_models", "write_catalog")


def __getattr__(name: str):
    if name in _PIPELINE:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'maas.builder' has no attribute {name!r}")


__all__ = list(_PIPELINE)
