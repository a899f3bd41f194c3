"""maas: the kit's tooling (manifest, build pipeline, local API, bench, CLI).

Runs on a developer's machine or at deploy time, never inside a Lambda function;
the serving code lives in the ``maas_runtime`` package (shared/), the Lambda layer.
"""

__version__ = "0.1.0"
