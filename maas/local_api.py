"""`maas serve` and `maas invoke`: the deployed API, on 127.0.0.1, running the very handler code.

Each HTTP request becomes the API Gateway REST proxy event (payload format 1.0) and is passed
in-process to the model's handler, one warm instance per model as Lambda keeps it: an instance
answers one request at a time, different models answer in parallel. Heavy (SageMaker) models go
through the proxy handler to the SageMaker serving program, started on a free local port.

The server knows nothing of models: it takes `Route(method, resource, target)`s, where a target
is anything with ``invoke(event, context) -> dict``. `manifest_stack` builds those routes from
the API's route table (maas_api.routes) for the models of models.toml that are built; another
driver (maas/template_api.py, from a synthesized CDK template) builds its own.
"""

from __future__ import annotations

import base64
import hmac
import importlib.util
import json
import os
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
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
from maas_api.errors import envelope
from maas_api.routes import EMBEDDING_TASK, INVOKE, model_routes, route, shared_routes
from maas_runtime import CARD_FILE

from .builder.signing import trusted_keys
from .lambda_worker import ACCOUNT_ID, LambdaContext
from .paths import BUILD_DIR, artifact_dir

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3000
STAGE = "local"
FUNCTIONS_DIR = "functions"
API_GATEWAY_MAX_BODY_BYTES = 10 * 1024 * 1024


class Target(Protocol):
    def invoke(self, event: dict, context: Any) -> dict: ...


@dataclass(frozen=True)
class Route:
    """One API Gateway method: an HTTP method (or "ANY") on a resource such as /models/{name}/invoke."""

    method: str
    resource: str
    target: Target

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


class BodyModelDispatch:
    """POST /v1/embeddings: the OpenAI `model` field picks the function (the default answers the rest)."""

    def __init__(self, targets: dict[str, Target], default: Target):
        self.targets = targets
        self.default = default

    def invoke(self, event: dict, context: Any = None) -> dict:
        model = None
        try:
            body = event.get("body") or ""
            if event.get("isBase64Encoded"):
                body = base64.b64decode(body).decode("utf-8")
            if len(body) <= MAX_BODY_BYTES:
                parsed = json.loads(body)
                model = parsed.get("model") if isinstance(parsed, dict) else None
        except (ValueError, RecursionError, UnicodeDecodeError):
            pass
        target = self.targets.get(model) if isinstance(model, str) else None
        return (target or self.default).invoke(event, context)


def _json_response(status: int, code: str, message: str, request_id: str | None, extra: dict | None = None):
    body = {**(extra or {}), **envelope(code, message, request_id)}
    return status, [("Content-Type", JSON)], json.dumps(body).encode("utf-8")


class LocalApi:
    """An API Gateway REST API stand-in: routes, an optional API key, one stage."""

    def __init__(self, routes: list[Route], api_key: str | None = None, stage: str = STAGE):
        self.routes = sorted(routes, key=lambda r: r.specificity, reverse=True)
        self.api_key = api_key or None
        self.stage = stage
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- one request, socket-free (the HTTP server below only moves bytes) ---------------------

    def handle(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, source_ip: str = "127.0.0.1"):
        """(status, headers, body bytes) for one request."""
        request_id = str(uuid.uuid4())
        split = urlsplit(target)
        raw_path = split.path or "/"
        header_map = {k.lower(): v for k, v in headers}
        if self.api_key is not None:
            given = header_map.get(API_KEY_HEADER, "")
            if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self.api_key.encode("utf-8")):
                return _json_response(
                    403, "forbidden", f"a valid {API_KEY_HEADER} header is required", request_id,
                    extra={"message": "Forbidden"},
                )
        route, params = self._route(method, raw_path)
        if route is None:
            return _json_response(404, "not_found", f"no route {method} {raw_path[:100]!r}", request_id)
        event = self.event(method, route, raw_path, split.query, headers, body, params, request_id, source_ip)
        try:
            result = route.target.invoke(event, None)
            return self._http_response(result)
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
        api_key = {k.lower(): v for k, v in headers}.get(API_KEY_HEADER)
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
                    "apiKey": api_key if self.api_key else None,
                    "apiKeyId": "local" if self.api_key else None,
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
    def _http_response(result: dict):
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
        self._httpd = _Server((host, port), _handler_class(self))
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def _handler_class(api: LocalApi):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "maas-local-api"
        # Headers and body go out in separate writes: with Nagle's algorithm on, the body waits
        # for the client's delayed ACK on every keep-alive request.
        disable_nagle_algorithm = True

        def log_message(self, fmt, *args):
            pass

        def send_error(self, code, message=None, explain=None):
            # Malformed request lines and headers: JSON like everything else, then close.
            self.close_connection = True
            if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
                self.request_version = "HTTP/1.0"  # answer with a status line and headers regardless
            status, headers, data = _json_response(code, "bad_request", message or "malformed HTTP request", None)
            self._write(status, headers, data)

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
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _read_body(self):
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                return None, (411, "length_required", "send a Content-Length; chunked bodies are not supported")
            raw = self.headers.get("Content-Length")
            try:
                length = int(raw) if raw is not None else 0
                if length < 0:
                    raise ValueError
            except ValueError:
                return None, (400, "bad_request", "Content-Length is not a non-negative integer")
            if length > MAX_BODY_BYTES:
                if length <= API_GATEWAY_MAX_BODY_BYTES:  # read it, so the client sees the answer
                    while length > 0:
                        length -= len(self.rfile.read(min(length, 1 << 20)) or b"x" * length)
                return None, (413, "payload_too_large", f"the request body is over the {MAX_BODY_BYTES}-byte limit")
            return self.rfile.read(length), None

        def _dispatch(self):
            body, problem = self._read_body()
            if problem:
                self.close_connection = True  # the unread body would be taken for the next request
                self._write(*_json_response(problem[0], problem[1], problem[2], None))
                return
            status, headers, data = api.handle(
                self.command, self.path, list(self.headers.items()), body, self.client_address[0]
            )
            self._write(status, headers, data, head=self.command == "HEAD")

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _dispatch

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


def load_serving_module(root: Path):
    """The SageMaker serving program."""
    return _load_module(root / FUNCTIONS_DIR / "sagemaker_serving" / "serve.py", "maas_sagemaker_serving")


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
    servers: list = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def start_endpoint(self, root: Path, model_dir: str | os.PathLike, name: str) -> str:
        """The SageMaker serving program for one model on a free local port; its URL."""
        serving = load_serving_module(root)
        httpd = serving.make_server(model_dir, host=DEFAULT_HOST, port=0, runtime_api=True)
        threading.Thread(target=httpd.serve_forever, name=f"sagemaker-{name}", daemon=True).start()
        self.servers.append(httpd)
        return f"http://{DEFAULT_HOST}:{httpd.server_address[1]}"

    def close(self) -> None:
        for httpd in self.servers:
            httpd.shutdown()
            httpd.server_close()
        self.servers.clear()


def manifest_stack(manifest, build_root: Path | None = None, models: list[str] | None = None) -> LocalStack:
    """Routes as the deployed API has them, for each model of the manifest that has been built."""
    root = manifest.root
    build_root = Path(build_root) if build_root else root
    catalog = build_root / BUILD_DIR / "catalog.json"
    functions = root / FUNCTIONS_DIR
    stack = LocalStack(routes=[], instances={})
    tasks: dict[str, str] = {}
    trusted = trusted_keys(manifest)  # signing.public_keys: what each deployed function is configured to trust
    for spec in manifest.select(models):
        folder = artifact_dir(build_root, spec.name, spec.version)
        if not (folder / CARD_FILE).is_file():
            stack.skipped[spec.name] = f"not built (run `maas build {spec.name}`)"
            continue
        if spec.target == "sagemaker":
            proxy = load_function_module(functions / "sagemaker_proxy")
            function = proxy.create_function(
                proxy.Config(
                    model_name=spec.name,
                    endpoint_name=f"maas-{spec.name}",
                    catalog_path=str(catalog),
                    runtime_url=stack.start_endpoint(root, folder, spec.name),
                )
            )
        else:
            handler = load_function_module(functions / "model")
            function = handler.create_function(
                handler.Config(model_name=spec.name, model_dir=str(folder), catalog_path=str(catalog),
                               signing_public_keys=trusted.value() if trusted else None)
            )
        settings = spec.lambda_settings
        stack.instances[spec.name] = FunctionInstance(
            f"maas-{spec.name}", function, memory_mb=settings.memory_mb, timeout_s=settings.timeout_s
        )
        tasks[spec.name] = spec.task
    if stack.instances:
        stack.routes = table_routes(stack.instances, tasks)
    return stack


def table_routes(instances: dict[str, Target], tasks: dict[str, str]) -> list[Route]:
    """The route table (maas_api.routes) for these models, each route to the function that answers it.

    Every method of the table is routed as API Gateway routes it. Besides, any method on a path of
    the table, and any other path, reaches a function too (`ANY`), so that a wrong method or an
    unknown route gets the function's JSON 405 or 404: a model's own paths (including the routes
    its task lacks) reach that model's function, everything else the default function.
    """
    default = next(iter(instances.values()))
    embedding = {name: instances[name] for name, task in tasks.items() if task == EMBEDDING_TASK}
    routes: list[Route] = []
    for name, instance in instances.items():
        for spec in model_routes():
            path = spec.render(name=name)
            if spec.serves(tasks[name]):
                routes.append(Route(spec.method, path, instance))
            routes.append(Route("ANY", path, instance))
    for spec in shared_routes():
        target = default
        if spec.operation == "embeddings":
            # Locally the OpenAI `model` field picks the function; in AWS the default one answers.
            target = BodyModelDispatch(embedding, next(iter(embedding.values()), default))
        routes += [Route(spec.method, spec.path, target), Route("ANY", spec.path, target)]
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
    api = LocalApi(stack.routes, api_key=api_key or os.environ.get(ENV_API_KEY))
    url = api.start(host, port)
    print(f"maas local API on {url} (stage {STAGE}{', API key required' if api.api_key else ''})", file=out)
    invoke_route = route(INVOKE)
    for name in stack.instances:
        target = manifest.get(name).target
        print(f"  {invoke_route.method} {url}{invoke_route.render(name=name)}   [{target}]", file=out)
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
