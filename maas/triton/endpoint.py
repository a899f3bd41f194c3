"""A heavy model's endpoint on this machine: a KServe v2 server with SageMaker's front before it.

The server is a real Triton (maas.triton.server) where NVIDIA's wheel runs, else the Python
stand-in (maas.triton.standin); which one, and why, is on the endpoint (`kind`, `fallback_reason`)
and printed by `maas serve`. The proxy function's boto3 client is pointed at `url`.
"""

from __future__ import annotations

import os
from pathlib import Path

from maas.paths import CACHE_KEEP, materialize

from .front import SageMakerFront
from .repository import content_key, served_model, write_local_repository, write_proxy_artifact
from .server import LocalTriton, TritonUnavailable, unavailable_reason
from .standin import KServeStandIn

ENV_LOCAL_SERVER = "MAAS_LOCAL_TRITON"
"""`stand-in` makes `maas serve` use the Python stand-in even where the real Triton runs."""
LOCAL_DIR = Path(".cache") / "triton"
"""Under the project root: local repositories and proxy copies, one folder per content hash."""


class LocalEndpoint:
    def __init__(self, root: Path, repository: Path, model: str, endpoint_name: str,
                 inference_component: str | None = None, use_triton: bool | None = None):
        root = Path(root)
        if use_triton is None:
            use_triton = os.environ.get(ENV_LOCAL_SERVER, "").strip().lower() != "stand-in"
        self.fallback_reason = unavailable_reason(root) if use_triton else "the stand-in was asked for"
        self.server = None
        if self.fallback_reason is None:
            try:
                self.server = LocalTriton(root, repository, model).start()
            except TritonUnavailable as exc:
                self.fallback_reason = str(exc)
        if self.server is None:
            self.server = KServeStandIn(repository, model).start()
        self.front = SageMakerFront(self.server.url, model, endpoint_name, inference_component).start()
        self.model, self.endpoint_name, self.inference_component = model, endpoint_name, inference_component

    @property
    def kind(self) -> str:
        return self.server.kind

    @property
    def url(self) -> str:
        """sagemaker-runtime's endpoint_url for this endpoint."""
        return self.front.url

    @property
    def kserve_url(self) -> str:
        return self.server.url

    def close(self) -> None:
        self.front.stop()
        self.server.stop()


def stage_local_model(root: Path, spec, folder: Path) -> tuple[Path, Path]:
    """(local model repository, proxy copy of the artifact) for a built heavy model, made once per
    content under .cache/triton."""
    dest = Path(root) / LOCAL_DIR / content_key(spec, folder)

    def fill(work: Path) -> None:
        model = served_model(Path(folder), spec.sagemaker)
        write_local_repository(model.config, model.graph, work / "repository")
        write_proxy_artifact(model, Path(folder), work / "proxy")

    materialize(dest, fill, keep=CACHE_KEEP)
    return dest / "repository", dest / "proxy"
