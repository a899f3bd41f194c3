"""SageMaker's side of a Triton endpoint, on 127.0.0.1, in front of a local KServe v2 server.

On AWS, InvokeEndpoint's front door hands the body and Content-Type to the container's
/invocations, where Triton's SageMaker listener reads
``application/vnd.sagemaker-triton.binary+json;json-header-size=N`` as a binary KServe v2 request,
and a container's non-2xx answer reaches the caller as a ModelError (HTTP 424). Locally that
listener cannot be used (it always binds 0.0.0.0), so this front plays both parts for the
proxy's boto3 client (``endpoint_url``): ``POST /endpoints/<name>/invocations`` is the
sagemaker-runtime API, ``GET /ping`` and ``POST /invocations`` the container's contract; both
forward to Triton's (or the stand-in's) plain KServe v2 HTTP port, translating where the JSON
header's length travels.

It answers the front door's own refusals as AWS does (x-amzn-ErrorType, JSON message): an
unknown endpoint or inference component (ValidationError), and, with `cold` set, an inference
component scaled to zero copies (ValidationError "... has no capacity ..."), the answer that
drives the proxy's 503 + Retry-After. Its 6 MB checks are approximations (AWS documents the
limit, not the exact error), there so that an oversized body fails here as it would there.
"""

from __future__ import annotations

import json
import re
import threading

from maas_api.constants import INVOKE_ENDPOINT_MAX_BYTES
from maas_runtime.kserve import JSON_CONTENT_TYPE, ProtocolError, header_length_of, sagemaker_content_type

from .client import post_infer
from .httpd import Handler, LocalServer

NO_CAPACITY_MESSAGE = (
    "Inference Component has no capacity to process this request. ApplicationAutoScaling may be in-progress "
    "(if configured) or try to increase the capacity by invoking UpdateInferenceComponentRuntimeConfig API."
)
"""What InvokeEndpoint answers (HTTP 400, ValidationError) for an inference component at 0 copies."""
INFERENCE_COMPONENT_HEADER = "X-Amzn-SageMaker-Inference-Component"
_RUNTIME_PATH = re.compile(r"^/endpoints/([^/]+)/invocations/?$")


class SageMakerFront(LocalServer):
    def __init__(self, kserve_url: str, model: str, endpoint_name: str, inference_component: str | None = None):
        self.kserve_url, self.model = kserve_url.rstrip("/"), model
        self.endpoint_name, self.inference_component = endpoint_name, inference_component
        self.cold = False
        """Answer every invocation as an inference component scaled to zero would."""
        self.invocations = 0
        self._count = threading.Lock()
        super().__init__()

    def start(self) -> "SageMakerFront":
        self.serve(_handler(self), f"sagemaker-{self.model}")
        return self

    def invoke(self, body: bytes, content_type: str | None) -> tuple[int, bytes, str]:
        """The container's /invocations: (status, body, Content-Type) from Triton, translated."""
        with self._count:
            self.invocations += 1
        try:
            header_length = header_length_of(content_type)
        except ProtocolError as exc:
            return 400, json.dumps({"error": str(exc)}).encode(), JSON_CONTENT_TYPE
        status, answer, answer_header_length = post_infer(self.kserve_url, self.model, body, header_length)
        if status != 200:
            return status, answer, JSON_CONTENT_TYPE
        return 200, answer, sagemaker_content_type(answer_header_length)


def _handler(front: SageMakerFront):
    class FrontHandler(Handler):
        def _aws_error(self, status: int, code: str, message: str, **fields) -> None:
            body = json.dumps({"message": message, **fields}).encode()
            self.send(status, body, {"Content-Type": JSON_CONTENT_TYPE, "x-amzn-ErrorType": code})

        def _body(self) -> bytes | None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > INVOKE_ENDPOINT_MAX_BYTES:
                self.close_connection = True
                return None
            return self.rfile.read(length)

        def do_GET(self):
            if self.path.split("?")[0].rstrip("/") != "/ping":
                return self.send(404, b"", {})
            try:
                import urllib.request

                with urllib.request.urlopen(f"{front.kserve_url}/v2/health/ready", timeout=5) as answer:
                    ready = answer.status == 200
            except OSError:
                ready = False
            self.send(200 if ready else 503, b"", {"Content-Type": "text/plain"})

        def do_POST(self):
            path = self.path.split("?")[0]
            runtime = _RUNTIME_PATH.match(path)
            if path.rstrip("/") == "/invocations":  # the container's contract: Triton's own answers
                body = self._body()
                if body is None:
                    return self.send(413, b'{"error":"request too large"}', {"Content-Type": JSON_CONTENT_TYPE})
                status, answer, content_type = front.invoke(body, self.headers.get("Content-Type"))
                return self.send(status, answer, {"Content-Type": content_type})
            if runtime is None:
                return self._aws_error(404, "UnknownOperationException", f"no operation at {path[:100]}")
            body = self._body()
            if body is None:
                return self._aws_error(400, "ValidationError", f"Request payload is larger than {INVOKE_ENDPOINT_MAX_BYTES} bytes")
            if runtime.group(1) != front.endpoint_name:
                return self._aws_error(400, "ValidationError", f"Endpoint {runtime.group(1)} not found.")
            component = self.headers.get(INFERENCE_COMPONENT_HEADER)
            if component != front.inference_component:
                return self._aws_error(400, "ValidationError", f"Inference Component {component} not found.")
            if front.cold:
                with front._count:
                    front.invocations += 1
                return self._aws_error(400, "ValidationError", NO_CAPACITY_MESSAGE)
            status, answer, content_type = front.invoke(body, self.headers.get("Content-Type"))
            if status != 200:
                origin = "client" if status < 500 else "server"
                return self._aws_error(
                    424, "ModelError", f"Received {origin} error ({status}) from primary with message \"{answer[:500].decode('utf-8', 'replace')}\".",
                    OriginalStatusCode=status, OriginalMessage=answer.decode("utf-8", "replace"),
                )
            if len(answer) > INVOKE_ENDPOINT_MAX_BYTES:
                return self._aws_error(424, "ModelError", f"The model's answer is larger than {INVOKE_ENDPOINT_MAX_BYTES} bytes",
                                       OriginalStatusCode=200, OriginalMessage="")
            self.send(200, answer, {"Content-Type": content_type, "x-Amzn-Invoked-Production-Variant": "AllTraffic"})

    return FrontHandler
