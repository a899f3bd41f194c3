"""KServe v2 over plain HTTP: a `Transport` for maas_runtime's RemoteEngine, and model metadata.

Used where a process talks to Triton's own HTTP port directly (the SageMaker front, the tests,
bench); the proxy Lambda goes through InvokeEndpoint instead.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from maas_runtime.kserve import BINARY_CONTENT_TYPE, HEADER_LENGTH_HEADER, JSON_CONTENT_TYPE, header_length_of

DEFAULT_TIMEOUT_S = 120


class KServeHttpError(RuntimeError):
    """A non-2xx answer: Triton's status and its ``{"error": ...}`` message."""

    def __init__(self, status: int, message: str, body: bytes = b""):
        super().__init__(f"{status}: {message}")
        self.status, self.message, self.body = status, message, body


def post_infer(url: str, model: str, body: bytes, header_length: int | None, timeout: float = DEFAULT_TIMEOUT_S):
    """(status, answer body, answer header length) of POST /v2/models/<model>/infer; never raises on a status."""
    headers = {"Content-Type": JSON_CONTENT_TYPE}
    if header_length is not None:
        headers = {"Content-Type": BINARY_CONTENT_TYPE, HEADER_LENGTH_HEADER: str(header_length)}
    request = urllib.request.Request(f"{url}/v2/models/{model}/infer", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read(), header_length_of(None, answer.headers.get(HEADER_LENGTH_HEADER))
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), None


def error_message(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body[:300].decode("utf-8", "replace")


class KServeHttpTransport:
    max_payload_bytes = None

    def __init__(self, url: str, model: str, timeout: float = DEFAULT_TIMEOUT_S):
        self.url, self.model, self.timeout = url.rstrip("/"), model, timeout

    def infer(self, body: bytes, header_length: int | None) -> tuple[bytes, int | None]:
        status, answer, answer_header_length = post_infer(self.url, self.model, body, header_length, self.timeout)
        if status != 200:
            raise KServeHttpError(status, error_message(answer), answer)
        return answer, answer_header_length

    def metadata(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/v2/models/{self.model}", timeout=self.timeout) as answer:
            return json.loads(answer.read())
