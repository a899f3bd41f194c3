"""`maas serve` and `maas invoke`: the deployed API, on 127.0.0.1, running the very handler code.

Each HTTP request becomes the API Gateway REST proxy event (payload format 1.0) and is passed
in-process to the model's handler, one warm instance per model as Lambda keeps it: an instance
answers one request at a time, different models answer in parallel. Heavy (SageMaker) models go
through the proxy handler to a local Triton (or its stand-in) behind SageMaker's contract
(maas.triton.endpoint), started on free local ports.

The server knows nothing of models: it takes `Route(method, resource, target)`s, where a target
is anything with ``invoke(event, context) -> dict``. `manifest_stack` builds those routes from
the API's route table (maas_api.routes) for the models of models.toml that are built; another
driver (maas/template_api.py, from a synthesized CDK template) builds its own.

The HTTP server is the standard library's (http.server), with the limits a server facing clients
needs (`ServerLimits`): a deadline for each request's head and body and for idle keep-alive
connections, enforced by one watchdog thread (a socket timeout bounds a single read, which a
client trickling bytes never trips); a bound on connections, past which a connection is answered
a JSON 503 and closed; the API key checked, and Content-Length parsed strictly, before the body is
read; and every method reaching the routes (TRACE and the like get the function's JSON 405).
Kept rather than replaced by a WSGI/ASGI server because none of the well-kept ones meets all of
that as it comes: waitress reads the whole body before the application runs (so before the key
check), cheroot and uvicorn drop or answer plain text past their connection bound, and neither
bounds the total time of a request head.
"""

from __future__ import annotations

import base64
import hmac
import importlib.util
import json
import os
import re
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from maas_api.constants import (
    API_KEY_HEADER,
    ENV_API_KEY,
    JSON,
    MAX_BODY_BYTES,
)
from maas_api.errors import ApiError, envelope
from maas_api.framing import content_length
from maas_api.routes import INVOKE, INVOKE_VERSION, default_model, find, model_routes, route, shared_routes, version_routes
from maas_runtime import CARD_FILE

from .builder.signing import trusted_keys
from .lambda_worker import ACCOUNT_ID, LambdaContext
from .paths import BUILD_DIR, artifact_dir
from .tenants import TenantGate, local_key_id, policy_for

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3000
STAGE = "local"
FUNCTIONS_DIR = "functions"


@dataclass(frozen=True)
class ServerLimits:
    """What one client may hold of the local API; every default is here and nowhere else."""

    max_connections: int = 64
    """Connections served at once; one more is answered 503 (JSON, Retry-After) and closed."""
    head_timeout_s: float = 10.0
    """From accepting a connection to its first complete request line and headers."""
    idle_timeout_s: float = 15.0
    """From one answer on a keep-alive connection to the next complete request head."""
    body_timeout_s: float = 30.0
    """From the end of the headers to the end of the body (MAX_BODY_BYTES at most)."""
    send_timeout_s: float = 30.0
    """For each write of an answer (a client that stops reading)."""
    linger_s: float = 1.0
    """After refusing a body unread: how long its bytes are read and dropped before closing, so
    that closing with unread data does not reset the connection before the client reads the answer."""


class Target(Protocol):
    def invoke(self, event: dict, context: Any) -> dict: ...


@dataclass(frozen=True)
class Route:
    """One API Gateway method: an HTTP method (or "ANY") on a resource such as /models/{name}/invoke."""

    method: str
    resource: str
    target: Target
    api_key_required: bool = True
    """Whether the API key (where the API has one) is checked on this method, as API Gateway's
    ApiKeyRequired: `maas serve` checks it on every route, `--template` where the template says."""

    def __post_init__(self):
        pattern, literals, greedy = "", 0, False
        for segment in self.resource.strip("/").split("/") if self.resource != "/" else []:
            if m := re.fullmatch(r"\{(\w+)\+\}", segment):
                pattern += f"/(?P<{m.group(1)}>.+)"
                greedy = True
            elif m := re.fullmatch(r"\{(\w+)\}", segment):
                pattern += f"/(?P<{m.group(1)}>[^/]+)"
            else:
                pattern += "/" + re.escape(segment)
                literals += 1
        object.__setattr__(self, "_regex", re.compile(f"^{pattern or '/'}/?$"))
        # API Gateway prefers the most specific resource: literals over {param}, {proxy+} last.
        object.__setattr__(self, "specificity", (not greedy, literals))

    def match(self, raw_path: str) -> dict | None:
        m = self._regex.match(raw_path)
        if m is None:
            return None
        return {k: unquote(v) for k, v in m.groupdict().items()}


class FunctionInstance:
    """One warm Lambda instance of a function: it runs one invocation at a time."""

    def __init__(self, name: str, function: Target, memory_mb: int = 1024, timeout_s: int = 30):
        self.name = name
        self.function = function
        self.memory_mb = memory_mb
        self.timeout_s = timeout_s
        self._lock = threading.Lock()

    def invoke(self, event: dict, context: Any = None) -> dict:
        context = context or LambdaContext(self.name, self.memory_mb, self.timeout_s)
        with self._lock:
            return self.function.invoke(event, context)


Answer = tuple[int, list[tuple[str, str]], bytes]
"""(status, headers, body bytes)."""


def _json_response(status: int, code: str, message: str, request_id: str | None, extra: dict | None = None,
                   headers: dict | None = None) -> Answer:
    body = {**(extra or {}), **envelope(code, message, request_id)}
    return status, [("Content-Type", JSON), *(headers or {}).items()], json.dumps(body).encode("utf-8")


def _error_response(error: ApiError, request_id: str | None) -> Answer:
    return _json_response(int(error.status), error.code, error.message, request_id, headers=error.headers)


class LocalApi:
    """An API Gateway REST API stand-in: routes, an optional API key, one stage."""

    def __init__(self, routes: list[Route], api_key: str | None = None, stage: str = STAGE,
                 limits: ServerLimits = ServerLimits(), tenants=None):
        self.routes = sorted(routes, key=lambda r: r.specificity, reverse=True)
        self.api_key = api_key or None
        self.tenants = tenants
        """maas.tenants.TenantGate: each tenant's key, rate and quota (instead of the one api_key)."""
        self.stage = stage
        self.limits = limits
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- one request, socket-free (the HTTP server below only moves bytes) ---------------------

    def precheck(self, method: str, target: str, headers: list[tuple[str, str]], request_id: str) -> Answer | None:
        """What API Gateway answers before any function runs (and before the body is read):
        404 for a path no route has, 403 for a missing or wrong API key where the route needs one."""
        raw_path = urlsplit(target).path or "/"
        found, _ = self._route(method, raw_path)
        if found is None:
            return _json_response(404, "not_found", f"no route {method} {raw_path[:100]!r}", request_id)
        if self.tenants is not None and found.api_key_required:
            tenant = self.tenants.tenant_of(next((v for k, v in headers if k.lower() == API_KEY_HEADER), None))
            if tenant is None:
                return _json_response(403, "forbidden", f"a tenant's {API_KEY_HEADER} header is required", request_id,
                                      extra={"message": "Forbidden"})
            over = self.tenants.admit(tenant)
            if over is not None:
                return _json_response(429, "throttled", over[0], request_id, headers={"Retry-After": str(over[1])},
                                      extra={"message": "Too Many Requests"})
        elif self.api_key is not None and found.api_key_required:
            given = next((v for k, v in headers if k.lower() == API_KEY_HEADER), "")
            if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self.api_key.encode("utf-8")):
                return _json_response(
                    403, "forbidden", f"a valid {API_KEY_HEADER} header is required", request_id,
                    extra={"message": "Forbidden"},
                )
        return None

    def handle(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, source_ip: str = "127.0.0.1",
               request_id: str | None = None, prechecked: bool = False) -> Answer:
        """(status, headers, body bytes) for one request; `prechecked`: the server has run `precheck`
        already (before reading the body), which counts the request against its tenant's rate and quota."""
        request_id = request_id or str(uuid.uuid4())
        refused = None if prechecked else self.precheck(method, target, headers, request_id)
        if refused is not None:
            return refused
        split = urlsplit(target)
        raw_path = split.path or "/"
        found, params = self._route(method, raw_path)
        event = self.event(method, found, raw_path, split.query, headers, body, params, request_id, source_ip)
        try:
            result = found.target.invoke(event, None)
            answer = self._http_response(result)
            if self.tenants is not None and found.api_key_required:
                tenant = self.tenants.tenant_of({k.lower(): v for k, v in headers}.get(API_KEY_HEADER))
                spec = find(method, raw_path)
                self.tenants.record(tenant, (spec.match(raw_path) or {}).get("name") if spec else None, answer[0], answer[2])
            return answer
        except Exception:  # what API Gateway answers when a Lambda function crashes
            return _json_response(
                502, "internal_error", "the function failed; see its logs", request_id,
                extra={"message": "Internal server error"},
            )

    def _route(self, method: str, raw_path: str) -> tuple[Route | None, dict]:
        fallback: tuple[Route | None, dict] = (None, {})
        for candidate in self.routes:
            params = candidate.match(raw_path)
            if params is None:
                continue
            if candidate.method == method:
                return candidate, params
            if candidate.method == "ANY" and fallback[0] is None:
                fallback = (candidate, params)
        return fallback

    def event(self, method, route: Route, raw_path, query, headers, body: bytes, params, request_id, source_ip) -> dict:
        """The API Gateway REST proxy event (payload format 1.0) for this request."""
        single: dict[str, str] = {}
        multi: dict[str, list[str]] = {}
        for key, value in headers:
            single[key] = value
            multi.setdefault(key, []).append(value)
        qs = parse_qs(query, keep_blank_values=True) if query else {}
        # Decoded as API Gateway presents it, except an encoded "/" stays encoded: a model name
        # must never turn into extra path segments on its way to the handler.
        path = "%2F".join(unquote(part) for part in re.split("%2[fF]", raw_path))
        now = datetime.now(timezone.utc)
        try:
            text, is_b64 = (body.decode("utf-8") if body else None), False
        except UnicodeDecodeError:
            text, is_b64 = base64.b64encode(body).decode("ascii"), True
        keyed = (self.api_key is not None or self.tenants is not None) and route.api_key_required
        api_key = {k.lower(): v for k, v in headers}.get(API_KEY_HEADER)
        tenant = self.tenants.tenant_of(api_key) if self.tenants is not None and keyed else None
        return {
            "resource": route.resource,
            "path": path,
            "httpMethod": method,
            "headers": single or None,
            "multiValueHeaders": multi or None,
            "queryStringParameters": {k: v[-1] for k, v in qs.items()} or None,
            "multiValueQueryStringParameters": qs or None,
            "pathParameters": params or None,
            "stageVariables": None,
            "requestContext": {
                "accountId": ACCOUNT_ID,
                "apiId": "local",
                "resourceId": "local",
                "resourcePath": route.resource,
                "httpMethod": method,
                "path": f"/{self.stage}{path}",
                "stage": self.stage,
                "protocol": "HTTP/1.1",
                "requestId": request_id,
                "extendedRequestId": request_id,
                "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                "requestTimeEpoch": int(now.timestamp() * 1000),
                "domainName": single.get("Host") or single.get("host") or "127.0.0.1",
                "identity": {
                    "sourceIp": source_ip,
                    "userAgent": {k.lower(): v for k, v in headers}.get("user-agent"),
                    # As API Gateway fills them for a method that requires a key: the function
                    # documents the key (GET /openapi.json) only where requests need one.
                    "apiKey": api_key if keyed else None,
                    "apiKeyId": (local_key_id(tenant) if tenant else "local") if keyed else None,
                    "accountId": None,
                    "caller": None,
                    "user": None,
                    "userArn": None,
                },
            },
            "body": text,
            "isBase64Encoded": is_b64,
        }

    @staticmethod
    def _http_response(result: dict) -> Answer:
        if not isinstance(result, dict) or not isinstance(result.get("statusCode"), int):
            raise ValueError("malformed Lambda proxy response")
        headers: list[tuple[str, str]] = []
        seen = set()
        for key, values in (result.get("multiValueHeaders") or {}).items():
            for value in values:
                headers.append((key, str(value)))
            seen.add(key.lower())
        for key, value in (result.get("headers") or {}).items():
            if key.lower() not in seen:
                headers.append((key, str(value)))
        body = result.get("body") or ""
        data = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode("utf-8")
        return result["statusCode"], headers, data

    # --- the HTTP server ------------------------------------------------------------------------

    def start(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> str:
        """Serve in a background thread; port 0 picks a free port. Returns the base URL."""
        self._httpd = _Server((host, port), _handler_class(self), self.limits)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="maas-local-api", daemon=True)
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        assert self._httpd is not None, "not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


class _Watchdog:
    """Deadlines for the reads of every connection, kept by one thread.

    When a connection's deadline passes, its read side is shut: the blocked read returns at once
    with what arrived (the handler then answers 408 or just closes), and the write side stays open.
    """

    TICK_S = 0.1

    def __init__(self):
        self._due: dict[Any, float] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        threading.Thread(target=self._run, name="maas-local-api-deadlines", daemon=True).start()

    def arm(self, handler, seconds: float) -> None:
        with self._lock:
            handler.expired = False
            self._due[handler] = time.monotonic() + seconds

    def disarm(self, handler) -> bool:
        """Stop watching; whether the deadline had passed."""
        with self._lock:
            self._due.pop(handler, None)
            return handler.expired

    def _run(self) -> None:
        while not self._stopped.wait(self.TICK_S):
            now = time.monotonic()
            with self._lock:
                late = [h for h, due in self._due.items() if due <= now]
                for handler in late:
                    del self._due[handler]
                    handler.expired = True
            for handler in late:
                try:
                    handler.connection.shutdown(socket.SHUT_RD)
                except OSError:
                    pass

    def stop(self) -> None:
        self._stopped.set()


def _linger(sock: socket.socket, seconds: float) -> None:
    """Close politely after answering without reading the body: stop sending, then read and drop
    what the client still sends for up to `seconds`."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            sock.settimeout(left)
            if not sock.recv(1 << 16):
                return
        except OSError:
            return


def _raw_answer(status: int, headers: list[tuple[str, str]], data: bytes) -> bytes:
    """An HTTP/1.1 answer that closes the connection, as bytes (for a socket no handler owns)."""
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", *(f"{k}: {v}" for k, v in headers),
             f"Content-Length: {len(data)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data


class _Server(ThreadingHTTPServer):
    """One thread per connection, at most `max_connections` of them; past that, a short-lived
    thread (as many again at most) answers 503 and closes, and beyond even that the connection is
    closed at once (the listen backlog holds the rest)."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address, handler, limits: ServerLimits):
        self.limits = limits
        self.watchdog = _Watchdog()
        self._serving = threading.BoundedSemaphore(limits.max_connections)
        self._refusing = threading.BoundedSemaphore(limits.max_connections)
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        if self._serving.acquire(blocking=False):
            work = self._serve
        elif self._refusing.acquire(blocking=False):
            work = self._refuse
        else:
            self.shutdown_request(request)
            return
        threading.Thread(target=work, args=(request, client_address), daemon=True).start()

    def _serve(self, request, client_address) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            self._serving.release()

    def _refuse(self, request, client_address) -> None:
        try:
            request.settimeout(self.limits.linger_s)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 1 << 16:
                chunk = request.recv(1 << 16)
                if not chunk:
                    break
                head += chunk
            answer = _json_response(
                503, "server_busy", f"the server is answering {self.limits.max_connections} connections; retry shortly",
                None, headers={"Retry-After": "1"},
            )
            request.sendall(_raw_answer(*answer))
            _linger(request, self.limits.linger_s)
        except OSError:
            pass
        finally:
            self.shutdown_request(request)
            self._refusing.release()

    def server_close(self):
        super().server_close()
        self.watchdog.stop()


def _handler_class(api: LocalApi):
    limits = api.limits

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "maas-local-api"
        # Headers and body go out in separate writes: with Nagle's algorithm on, the body waits
        # for the client's delayed ACK on every keep-alive request.
        disable_nagle_algorithm = True
        timeout = limits.send_timeout_s  # each socket operation; the watchdog bounds whole reads
        expired = False
        answered = 0

        def log_message(self, fmt, *args):
            pass

        def handle_one_request(self):
            """One request: its head within the deadline, then any method to the routes."""
            watchdog = self.server.watchdog
            watchdog.arm(self, limits.idle_timeout_s if self.answered else limits.head_timeout_s)
            try:
                self.raw_requestline = self.rfile.readline(65537)
                if not self.raw_requestline:
                    self.close_connection = True
                    return
                if len(self.raw_requestline) > 65536:
                    self.requestline, self.request_version, self.command = "", "", ""
                    self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                    return
                parsed = self.parse_request()
            except OSError:  # a reset, or a single read outlasting the socket timeout
                self.close_connection = True
                return
            finally:
                late = watchdog.disarm(self)
            if not parsed:
                return
            if late:
                self.close_connection = True
                self._write(*_json_response(408, "request_timeout", "the request head did not arrive in time", None))
                return
            self._dispatch()
            self.answered += 1

        def handle_expect_100(self):
            # "100 Continue" is sent by _dispatch once the key and length are accepted, so that a
            # refused client never sends its body.
            return True

        def send_error(self, code, message=None, explain=None):
            # Malformed request lines and headers: JSON like everything else, a 4xx (an HTTP
            # version this server does not speak is the client's request too), then close.
            self.close_connection = True
            if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
                self.request_version = "HTTP/1.0"  # answer with a status line and headers regardless
            status = code if code < 500 else 400
            self._write(*_json_response(status, "bad_request", message or "malformed HTTP request", None))

        def _write(self, status, headers, data, head=False):
            try:
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                if self.close_connection:
                    self.send_header("Connection", "close")
                self.end_headers()
                if not head:
                    self.wfile.write(data)
                self.wfile.flush()
            except OSError:
                self.close_connection = True

        def _refuse(self, answer: Answer) -> None:
            """Answer without reading the body, then close (the unread body would be taken for
            the next request)."""
            self.close_connection = True
            self._write(*answer)
            _linger(self.connection, limits.linger_s)

        def _read_body(self, length: int, request_id: str) -> bytes | None:
            if "100-continue" in (self.headers.get("Expect") or "").lower() and self.request_version >= "HTTP/1.1":
                self.send_response_only(HTTPStatus.CONTINUE)
                self.end_headers()
            watchdog = self.server.watchdog
            watchdog.arm(self, limits.body_timeout_s)
            try:
                body = self.rfile.read(length) if length else b""
            except OSError:
                body = b""
            finally:
                late = watchdog.disarm(self)
            if len(body) == length:
                return body
            self.close_connection = True
            if late:
                self._write(*_json_response(408, "request_timeout", "the request body did not arrive in time", request_id))
            return None

        def _dispatch(self):
            request_id = str(uuid.uuid4())
            headers = list(self.headers.items())
            refused = api.precheck(self.command, self.path, headers, request_id)
            if refused is None:
                try:
                    length = content_length(self.headers)
                    if length > MAX_BODY_BYTES:
                        raise ApiError(f"the request body is {length} bytes; the limit is {MAX_BODY_BYTES}",
                                       status=413, code="payload_too_large")
                except ApiError as exc:
                    refused = _error_response(exc, request_id)
            if refused is not None:
                self._refuse(refused)
                return
            body = self._read_body(length, request_id)
            if body is None:
                return
            status, out_headers, data = api.handle(
                self.command, self.path, headers, body, self.client_address[0], request_id=request_id, prechecked=True
            )
            self._write(status, out_headers, data, head=self.command == "HEAD")

    return Handler


# --- the manifest-driven stack ---------------------------------------------------------------


_modules: dict[str, Any] = {}
_modules_lock = threading.Lock()


def _load_module(path: Path, name: str):
    """A module imported once from a file, under a private name (functions/ is not a package)."""
    path = path.resolve()
    with _modules_lock:
        if str(path) not in _modules:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            _modules[str(path)] = module
        return _modules[str(path)]


def load_function_module(folder: Path):
    """A function's app.py."""
    return _load_module(folder / "app.py", f"maas_function_{folder.name}")


# Off Lambda there is no X-Ray daemon to take traces and no CloudWatch to read metric logs.
POWERTOOLS_OFF_LAMBDA = {"POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_METRICS_DISABLED": "true"}


def configure_local_environment(verbose: bool = False) -> None:
    """Process-wide Powertools settings for running handlers off Lambda (set once, never per request)."""
    for key, value in POWERTOOLS_OFF_LAMBDA.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "INFO" if verbose else "WARNING")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


@dataclass
class LocalStack:
    """The routes to every function, and what must be stopped afterwards."""

    routes: list[Route]
    instances: dict[str, FunctionInstance]
    endpoints: dict = field(default_factory=dict)
    """model name -> its local SageMaker endpoint (maas.triton.endpoint.LocalEndpoint)."""
    skipped: dict[str, str] = field(default_factory=dict)

    def start_endpoint(self, root: Path, repository: Path, model: str, endpoint_name: str,
                       inference_component: str | None = None) -> str:
        """A heavy model's endpoint on 127.0.0.1 (Triton, or its stand-in): the URL for sagemaker-runtime."""
        from .triton.endpoint import LocalEndpoint

        endpoint = LocalEndpoint(root, repository, model, endpoint_name, inference_component)
        self.endpoints[model] = endpoint
        return endpoint.url

    def close(self) -> None:
        for endpoint in self.endpoints.values():
            endpoint.close()
        self.endpoints.clear()


def manifest_stack(manifest, build_root: Path | None = None, models: list[str] | None = None) -> LocalStack:
    """Routes as the deployed API has them, for each model of the manifest that has been built: one
    instance per model for its live version, and one per kept version of a model that keeps several
    (its pinned routes reach it, as each has its own function in AWS)."""
    root = manifest.root
    build_root = Path(build_root) if build_root else root
    catalog = build_root / BUILD_DIR / "catalog.json"
    stack = LocalStack(routes=[], instances={})
    tasks: dict[str, str] = {}
    pinned: dict[str, dict[str, Target]] = {}
    trusted = trusted_keys(manifest)  # signing.public_keys: what each deployed function is configured to trust
    for spec in manifest.select(models):
        kept = manifest.versions_of(spec.name)
        missing = [v.version for v in kept if not (artifact_dir(build_root, v.name, v.version) / CARD_FILE).is_file()]
        if missing:
            stack.skipped[spec.name] = f"version(s) {', '.join(missing)} not built (run `maas build {spec.name}`)"
            continue
        live = stack.instances[spec.name] = _instance(stack, manifest, spec, artifact_dir(build_root, spec.name, spec.version),
                                                     catalog, trusted)
        tasks[spec.name] = spec.task
        pinned[spec.name] = {spec.version: live}
        if spec.side_by_side:
            for version in kept:
                folder = artifact_dir(build_root, version.name, version.version)
                instance = _instance(stack, manifest, version, folder, catalog, trusted, suffix=f"@{version.version}")
                stack.instances[f"{spec.name}@{version.version}"] = pinned[spec.name][version.version] = instance
    if stack.instances:
        built = [(s.name, s.task, s.target) for s in manifest.select(models) if s.name in tasks]
        stack.routes = table_routes({n: stack.instances[n] for n in tasks}, tasks, default_model(built), pinned)
    return stack


def _instance(stack: LocalStack, manifest, spec, folder: Path, catalog: Path, trusted, suffix: str = "") -> FunctionInstance:
    """One warm function for one built version of a model: the model handler, or the SageMaker proxy
    in front of a local endpoint for a heavy model."""
    root = manifest.root
    functions = root / FUNCTIONS_DIR
    if spec.target == "sagemaker":
        from .triton.endpoint import stage_local_model

        repository, proxy_artifact = stage_local_model(root, spec, folder)
        endpoint, component = f"maas-{spec.name}", (f"{spec.name}-copy" if spec.sagemaker.min_instances == 0 else None)
        proxy = load_function_module(functions / "sagemaker_proxy")
        function = proxy.create_function(
            proxy.Config(
                model_name=spec.name,
                endpoint_name=endpoint,
                model_dir=str(proxy_artifact),
                inference_component=component,
                catalog_path=str(catalog),
                runtime_url=stack.start_endpoint(root, repository, spec.name, endpoint, component),
            ),
            tenants=policy_for(manifest, spec.name),
        )
    else:
        handler = load_function_module(functions / "model")
        function = handler.create_function(
            handler.Config(model_name=spec.name, model_dir=str(folder), catalog_path=str(catalog),
                           signing_public_keys=trusted.value() if trusted else None),
            tenants=policy_for(manifest, spec.name),
        )
    settings = spec.lambda_settings
    return FunctionInstance(f"maas-{spec.name}{suffix}", function, memory_mb=settings.memory_mb, timeout_s=settings.timeout_s)


def table_routes(instances: dict[str, Target], tasks: dict[str, str], default: str | None = None,
                 versions: dict[str, dict[str, Target]] | None = None) -> list[Route]:
    """The route table (maas_api.routes) for these models, each route to the function that answers it.

    Every method of the table is routed as API Gateway routes it: a model's routes to its own
    function, each kept version's pinned routes to that version's function (`versions`: model ->
    version -> function; a model without an entry has no pinned routes), the shared ones (POST
    /v1/embeddings included) to the `default` model's function (routes.default_model; the first one
    if not given). Besides, any method on a path of the table, and any other path, reaches a
    function too (`ANY`), so that a wrong method or an unknown route gets the function's JSON 405
    or 404: a model's own paths (including the routes its task lacks) reach that model's function,
    everything else the default function.
    """
    default = instances[default] if default is not None else next(iter(instances.values()))
    routes: list[Route] = []
    for name, instance in instances.items():
        for spec in model_routes():
            path = spec.render(name=name)
            if spec.serves(tasks[name]):
                routes.append(Route(spec.method, path, instance))
            routes.append(Route("ANY", path, instance))
        for version, pinned in (versions or {}).get(name, {}).items():
            for spec in version_routes():
                path = spec.render(name=name, version=version)
                if spec.serves(tasks[name]):
                    routes.append(Route(spec.method, path, pinned))
                routes.append(Route("ANY", path, pinned))
    for spec in shared_routes():
        routes += [Route(spec.method, spec.path, default), Route("ANY", spec.path, default)]
    routes.append(Route("ANY", "/{proxy+}", default))
    return routes


def warm_up(stack: LocalStack) -> None:
    """Load every model before the first request, as provisioned concurrency would."""
    for instance in stack.instances.values():
        backend = getattr(instance.function, "backend", None)
        if backend is not None and hasattr(backend, "model"):
            backend.model()


# --- the commands --------------------------------------------------------------------------


def serve(manifest, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, api_key: str | None = None,
          verbose: bool = False, out=sys.stdout) -> int:
    configure_local_environment(verbose)
    stack = manifest_stack(manifest)
    for name, why in stack.skipped.items():
        print(f"skipping {name}: {why}", file=out)
    if not stack.instances:
        print("no built models: run `maas build` first", file=out)
        stack.close()
        return 1
    warm_up(stack)
    gate = None
    if manifest.tenants:
        gate, generated = TenantGate.from_manifest(manifest)
    api = LocalApi(stack.routes, api_key=api_key or os.environ.get(ENV_API_KEY), tenants=gate)
    url = api.start(host, port)
    keyed = ", a tenant's API key required" if gate else (", API key required" if api.api_key else "")
    print(f"maas local API on {url} (stage {STAGE}{keyed})", file=out)
    if gate:
        for tenant in manifest.tenants:
            # A key is shown once, when it is made; afterwards it is read from the keys file.
            shown = f"x-api-key {gate.keys[tenant.name]}" if tenant.name in generated else "key in .maas/tenant-keys.json"
            quota = f", {tenant.quota} a {tenant.quota_period}" if tenant.quota else ""
            print(f"  tenant {tenant.name}: {shown} ({tenant.rate:g}/s, burst {tenant.burst}{quota}; "
                  f"models: {', '.join(tenant.models)})", file=out)
    invoke_route, pinned_route = route(INVOKE), route(INVOKE_VERSION)
    for spec in manifest.models:
        if spec.name not in stack.instances:
            continue
        print(f"  {invoke_route.method} {url}{invoke_route.render(name=spec.name)}   [{spec.target}, {spec.version}]", file=out)
        for version in spec.versions if spec.side_by_side else ():
            print(f"  {pinned_route.method} {url}{pinned_route.render(name=spec.name, version=version)}", file=out)
    for name, endpoint in stack.endpoints.items():
        why = f" ({endpoint.fallback_reason})" if endpoint.fallback_reason else ""
        print(f"  {name}'s SageMaker endpoint: the local {endpoint.kind}{why}, InvokeEndpoint at {endpoint.url}", file=out)
    shared = "   ".join(f"{spec.method} {url}{spec.path}" for spec in shared_routes())
    print(f"  {shared}   (Ctrl-C stops)", file=out, flush=True)
    return serve_until_interrupted(api, stack)


def serve_until_interrupted(api: LocalApi, stack: LocalStack) -> int:
    """Block until Ctrl-C, then stop the server and everything the stack started."""
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        api.stop()
        stack.close()
    return 0


def parse_input(text: str):
    """A command-line INPUT: JSON when it starts like an array or object (digits), else the text itself."""
    stripped = text.lstrip()
    if stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except ValueError:
            pass
    return text


def invoke(model: str, inputs: list[str], url: str = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}",
           parameters: dict | None = None, api_key: str | None = None, timeout: float = 30.0) -> tuple[int, dict]:
    """The invoke route (POST /models/{name}/invoke) on a running API; (status, JSON body)."""
    import urllib.error
    import urllib.request
    from urllib.parse import quote

    body = json.dumps({"inputs": [parse_input(i) for i in inputs], "parameters": parameters or {}}).encode()
    invoke_route = route(INVOKE)
    request = urllib.request.Request(
        url.rstrip("/") + invoke_route.render(name=quote(model, safe="")),
        data=body,
        method=invoke_route.method,
        headers={"Content-Type": JSON, **({API_KEY_HEADER: api_key} if api_key else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        data = exc.read()
        try:
            return exc.code, json.loads(data)
        except ValueError:
            return exc.code, {"error": {"code": "http_error", "message": data.decode("utf-8", "replace")[:500]}}
