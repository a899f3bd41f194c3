"""The serving program of the SageMaker container for heavy models (target = "sagemaker").

SageMaker's inference contract: the container is started as ``serve``, listens on port 8080 and
answers ``GET /ping`` (healthy once the model is loaded) and ``POST /invocations``. The model
comes from /opt/ml/model (SageMaker unpacks model.tar.gz there). Requests and answers are the
Lambda path's: ``{"inputs", "parameters"}`` -> ``{"model", "version", "outputs", "usage"}``, and
errors are the same envelope with the same statuses; with the CustomAttributes
``maas-operation=explain`` the answer is the explain route's. maas_runtime picks onnxruntime's CUDA
provider when the image has it, CPU otherwise.

    python serve.py serve [--model-dir DIR] [--port 8080] [--host 0.0.0.0]
    python serve.py package build/minilm-gpu/1.0.0 -o model.tar.gz

For `maas serve` the same server can also answer the sagemaker-runtime API path
(``POST /endpoints/<name>/invocations``), so the proxy's boto3 client can be pointed at it; that
mode wraps container errors the way SageMaker does (HTTP 424 ModelError).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from maas_api.constants import (
    DEFAULT_SERVING_PORT,
    DEFAULT_SM_MODEL_DIR,
    ENV_SERVING_PORT,
    ENV_SM_MODEL_DIR,
    JSON,
    MAX_BODY_BYTES,
    SAGEMAKER_CUSTOM_ATTRIBUTES_HEADER,
    SAGEMAKER_EXPLAIN,
)
from maas_api.errors import ApiError, PayloadTooLarge, Unprocessable, envelope, from_runtime
from maas_api.framing import content_length
from maas_api.function import validation_message, check_json_body
from maas_api.schemas import ExplainRequest, InvokeRequest
from maas_runtime import CARD_FILE, RuntimeLibraryError, load_model, read_card, verify_artifact
from pydantic import ValidationError

_RUNTIME_PATH = re.compile(r"^/endpoints/[^/]+/invocations/*$")


class Server:
    """The loaded model and the one function both HTTP front ends call."""

    def __init__(self, model_dir: str | os.PathLike):
        self.model = load_model(model_dir)
        # One batch at a time: the GPU (or the CPU's threads) are already busy with one.
        self._lock = threading.Lock()

    def invoke(self, body: bytes, content_type: str | None, explain: bool = False) -> tuple[int, dict]:
        """(status, JSON body) for one /invocations request (explanations where the caller's
        CustomAttributes ask for them); never raises."""
        try:
            event = {"body": body.decode("utf-8", "surrogateescape"), "headers": {"content-type": content_type or ""}}
            check_json_body(event)
            request = (ExplainRequest if explain else InvokeRequest).model_validate_json(body)
        except ApiError as exc:
            return int(exc.status), envelope(exc.code, exc.message, None)
        except ValidationError as exc:
            error = Unprocessable(validation_message(exc.errors()), code="schema_violation")
            return int(error.status), envelope(error.code, error.message, None)
        try:
            with self._lock:
                answer = self.model.explain if explain else self.model.predict
                prediction = answer(request.inputs, request.parameters)
        except RuntimeLibraryError as exc:
            error = from_runtime(exc)
            return int(error.status), envelope(error.code, error.message, None)
        return 200, {
            "model": self.model.name,
            "version": self.model.version,
            "outputs": prediction.outputs,
            "usage": prediction.usage,
        }


def _handler_class(server: Server, runtime_api: bool):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "maas-sagemaker-serving"

        def log_message(self, fmt, *args):  # quiet: one line per request is noise at 1000s rps
            pass

        def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
            data = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", JSON)
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path.split("?")[0].rstrip("/") == "/ping":
                self._send(200, {"status": "ok", "model": server.model.name, "version": server.model.version})
            else:
                self._send(404, envelope("not_found", "the container answers GET /ping and POST /invocations", None))

        def do_POST(self):
            path = self.path.split("?")[0]
            runtime = runtime_api and bool(_RUNTIME_PATH.match(path))
            if path.rstrip("/") != "/invocations" and not runtime:
                self._send(404, envelope("not_found", "the container answers GET /ping and POST /invocations", None))
                return
            try:
                length = content_length(self.headers)
                if length > MAX_BODY_BYTES:
                    raise PayloadTooLarge(f"the request body is {length} bytes; the limit is {MAX_BODY_BYTES}")
            except ApiError as error:
                self.close_connection = True  # the body stays unread
                self._send(int(error.status), envelope(error.code, error.message, None))
                return
            explain = self.headers.get(SAGEMAKER_CUSTOM_ATTRIBUTES_HEADER, "").strip() == SAGEMAKER_EXPLAIN
            status, payload = server.invoke(self.rfile.read(length), self.headers.get("Content-Type"), explain)
            if runtime and status != 200:
                # What the sagemaker-runtime front end answers when a container fails a request.
                self._send(
                    424,
                    {
                        "Message": f"Received client error ({status}) from primary with message",
                        "OriginalStatusCode": status,
                        "OriginalMessage": json.dumps(payload),
                    },
                    {"x-amzn-ErrorType": "ModelError"},
                )
                return
            self._send(status, payload)

    return Handler


def make_server(model_dir, host: str = "0.0.0.0", port: int = DEFAULT_SERVING_PORT, runtime_api: bool = False):
    """A ThreadingHTTPServer (not yet serving) for the model in ``model_dir``; port 0 picks a free one."""
    server = Server(model_dir)
    httpd = ThreadingHTTPServer((host, port), _handler_class(server, runtime_api))
    httpd.daemon_threads = True
    httpd.model_server = server
    return httpd


def package_model(artifact_dir: str | os.PathLike, output: str | os.PathLike) -> Path:
    """model.tar.gz for SageMaker from build/<name>/<version>/: card.json and its files at the root.

    The artifact is verified first, and the archive is byte-for-byte reproducible (sorted
    entries, zero mtimes and owners), so an unchanged model keeps its S3 object and digest.
    """
    folder = Path(artifact_dir)
    card = verify_artifact(folder, read_card(folder))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    names = sorted({CARD_FILE, *card.files})
    with open(output, "wb") as raw:
        import gzip

        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for name in names:
                    data = (folder / name).read_bytes()
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime, info.mode = len(data), 0, 0o644
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    tar.addfile(info, io.BytesIO(data))
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="serve.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="answer /ping and /invocations (what SageMaker runs)")
    serve.add_argument("--model-dir", default=os.environ.get(ENV_SM_MODEL_DIR, DEFAULT_SM_MODEL_DIR))
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=int(os.environ.get(ENV_SERVING_PORT, DEFAULT_SERVING_PORT)))
    package = sub.add_parser("package", help="build model.tar.gz from build/<name>/<version>/")
    package.add_argument("artifact_dir")
    package.add_argument("-o", "--output", default="model.tar.gz")
    args = parser.parse_args(argv if argv is not None else (sys.argv[1:] or ["serve"]))
    if args.command == "package":
        print(package_model(args.artifact_dir, args.output))
        return 0
    httpd = make_server(args.model_dir, args.host, args.port)
    model = httpd.model_server.model
    print(f"serving {model.name} {model.version} on {args.host}:{httpd.server_address[1]}", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
