"""A KServe v2 server in Python for one model of a local repository: Triton's stand-in.

`maas serve` uses it where NVIDIA's tritonserver wheel cannot run (anything but Linux x86_64, a
Python built without a shared libpython, the tool venv not installed): the same model repository,
the same protocol (health, model metadata, inference in JSON and in the binary tensor extension),
Triton's error answers (400 ``{"error": ...}``), and the same SageMaker front in front of it, so
the proxy code under test is the same. What it does not do is Triton's dynamic batching: each
request is one ONNX Runtime run.

http.server rather than a web framework: the local API is built on it already, the codec is
maas_runtime's own (the one the proxy uses), and KServe's Python server package would bring
FastAPI, uvicorn and gRPC for three routes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from maas_runtime.kserve import (
    BINARY_CONTENT_TYPE,
    HEADER_LENGTH_HEADER,
    JSON_CONTENT_TYPE,
    ProtocolError,
    decode_request,
    encode_response,
    header_length_of,
)

from . import config as triton_config
from .httpd import Handler, LocalServer

_MODEL_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer|/config)?/?$")
MAX_REQUEST_BYTES = 64 * 1024 * 1024


class InferError(Exception):
    """Triton's 400: the request does not fit the model."""


class KServeStandIn(LocalServer):
    kind = "stand-in"

    def __init__(self, repository: Path, model: str):
        import onnxruntime as ort

        folder = Path(repository) / model
        self.config = triton_config.parse((folder / triton_config.CONFIG_FILE).read_text(encoding="utf-8"))
        self.model = model
        self.session = ort.InferenceSession(
            str(folder / triton_config.VERSION / triton_config.MODEL_FILENAME), providers=["CPUExecutionProvider"]
        )
        pb = triton_config.model_config_pb2()

        def tensors(entries):
            return [{
                "name": e.name,
                "datatype": pb.DataType.Name(e.data_type).removeprefix("TYPE_").replace("STRING", "BYTES"),
                "shape": [-1, *e.dims],
            } for e in entries]

        self.metadata = {
            "name": model, "versions": [triton_config.VERSION], "platform": self.config.backend or self.config.platform,
            "inputs": tensors(self.config.input), "outputs": tensors(self.config.output),
        }
        super().__init__()

    def infer(self, body: bytes, header_length: int | None) -> tuple[bytes, int | None]:
        try:
            header, arrays = decode_request(body, header_length)
        except ProtocolError as exc:
            raise InferError(str(exc)) from None
        expected = {t["name"]: t for t in self.metadata["inputs"]}
        if set(arrays) != set(expected):
            raise InferError(f"expected {len(expected)} inputs but got {len(arrays)} inputs for model '{self.model}'")
        batch = None
        feeds = {}
        for name, spec in expected.items():
            array = arrays[name]
            entry = next(e for e in header["inputs"] if e["name"] == name)
            if entry["datatype"] != spec["datatype"]:
                raise InferError(f"inference input '{name}' data-type is '{entry['datatype']}', but model '{self.model}' expects '{spec['datatype']}'")
            dims = spec["shape"][1:]
            if array.ndim != len(spec["shape"]) or any(d != -1 and d != s for d, s in zip(dims, array.shape[1:])):
                raise InferError(f"unexpected shape for input '{name}' for model '{self.model}'. Expected {spec['shape']}, got {list(array.shape)}")
            if batch is not None and array.shape[0] != batch:
                raise InferError(f"input '{name}' batch size does not match other inputs for '{self.model}'")
            batch = array.shape[0]
            feeds[name] = array
        if not 1 <= batch <= self.config.max_batch_size:
            raise InferError(f"inference request batch-size must be <= {self.config.max_batch_size} for '{self.model}'")
        outputs = {o["name"] for o in self.metadata["outputs"]}
        asked = header.get("outputs") or [{"name": n} for n in sorted(outputs)]
        default_binary = bool((header.get("parameters") or {}).get("binary_data_output", False))
        binary = {}
        for entry in asked:
            name = entry.get("name") if isinstance(entry, dict) else None
            if name not in outputs:
                raise InferError(f"unexpected inference output '{name}' for model '{self.model}'")
            binary[name] = bool((entry.get("parameters") or {}).get("binary_data", default_binary))
        results = self.session.run(list(binary), feeds)
        return encode_response(self.model, {n: np.asarray(r) for n, r in zip(binary, results)}, binary,
                               request_id=header.get("id"))

    def start(self) -> "KServeStandIn":
        self.serve(_handler(self), f"kserve-{self.model}")
        return self


def _handler(server: KServeStandIn):
    class StandInHandler(Handler):
        def _json(self, status: int, payload: dict) -> None:
            self.send(status, json.dumps(payload).encode(), {"Content-Type": JSON_CONTENT_TYPE})

        def do_GET(self):
            path = self.path.split("?")[0]
            if path.rstrip("/") in ("/v2/health/live", "/v2/health/ready"):
                return self.send(200, b"", {})
            match = _MODEL_PATH.match(path)
            if not match or match.group(1) != server.model or match.group(2) not in (None, triton_config.VERSION):
                return self._json(404, {"error": f"Request for unknown model: '{path}' is not found"})
            if match.group(3) == "/ready":
                return self.send(200, b"", {})
            if match.group(3) == "/config":
                from google.protobuf import json_format

                return self._json(200, json_format.MessageToDict(server.config, preserving_proto_field_name=True))
            if match.group(3) is None:
                return self._json(200, server.metadata)
            return self._json(405, {"error": "use POST for inference"})

        def do_POST(self):
            match = _MODEL_PATH.match(self.path.split("?")[0])
            if not match or match.group(3) != "/infer":
                return self._json(404, {"error": f"no route POST {self.path[:100]}"})
            if match.group(1) != server.model:
                return self._json(400, {"error": f"Request for unknown model: '{match.group(1)}' is not found"})
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_REQUEST_BYTES:
                self.close_connection = True
                return self._json(400, {"error": "a request needs a Content-Length of at most 64 MiB"})
            body = self.rfile.read(length)
            try:
                answer, header_length = server.infer(body, header_length_of(None, self.headers.get(HEADER_LENGTH_HEADER)))
            except (InferError, ProtocolError) as exc:
                return self._json(400, {"error": str(exc)})
            except Exception as exc:  # noqa: BLE001 - what Triton answers when a backend fails
                return self._json(500, {"error": f"{type(exc).__name__}: {exc}"})
            if header_length is None:
                return self.send(200, answer, {"Content-Type": JSON_CONTENT_TYPE})
            self.send(200, answer, {"Content-Type": BINARY_CONTENT_TYPE, HEADER_LENGTH_HEADER: str(header_length)})

    return StandInHandler
