"""Tenants over the local API: each with its own key, models, rate and quota. The second tenant is
refused a model it may not call (403, by the model's own function, as in AWS) and gets 429 with
Retry-After past its quota; `maas usage` reports both tenants' requests, inputs and tokens."""

from __future__ import annotations

import http.client
import io
import json
from contextlib import redirect_stdout
from datetime import datetime, timezone
from pathlib import Path

import pytest

from maas.local_api import LocalApi, configure_local_environment, manifest_stack, warm_up
from maas.manifest import load_manifest
from maas.tenants import TenantGate

configure_local_environment()

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
IMAGE = [[0, 0, 5, 13, 9, 1, 0, 0], [0, 0, 13, 15, 10, 15, 5, 0], [0, 3, 15, 2, 0, 11, 8, 0], [0, 4, 12, 0, 0, 8, 8, 0],
         [0, 5, 8, 0, 0, 9, 8, 0], [0, 4, 11, 0, 1, 12, 7, 0], [0, 2, 14, 5, 10, 12, 0, 0], [0, 0, 6, 13, 10, 0, 0, 0]]
TENANTS = """
[tenants.acme]
models = ["*"]
rate = 50
burst = 50
quota = 1000

[tenants.globex]
models = ["minilm"]
rate = 50
burst = 50
quota = 3
quota_period = "month"
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The shipped manifest with two tenants, in a folder of its own (its .maas/ keys and usage)."""
    for needed in ("minilm/1.0.0", "digits/1.0.0", "digits/1.1.0"):
        if not (BUILD / needed / "card.json").is_file():
            pytest.skip(f"build/{needed} missing: run `maas build` first")
    root = tmp_path_factory.mktemp("tenants")
    (root / "models.toml").write_text((ROOT / "models.toml").read_text() + TENANTS)
    (root / "build").symlink_to(BUILD)
    (root / "functions").symlink_to(ROOT / "functions")
    return load_manifest(root / "models.toml")


@pytest.fixture(scope="module")
def server(project):
    stack = manifest_stack(project, build_root=ROOT, models=["minilm", "digits"])
    warm_up(stack)
    gate, generated = TenantGate.from_manifest(project, env={})
    assert sorted(generated) == ["acme", "globex"]
    api = LocalApi(stack.routes, tenants=gate)
    api.start("127.0.0.1", 0)
    yield api, gate
    api.stop()
    stack.close()


def call(api, path: str, body, key: str | None):
    host, port = api.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    headers = {"Content-Type": "application/json", **({"x-api-key": key} if key else {})}
    try:
        conn.request("POST", path, body=json.dumps(body).encode(), headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        conn.close()


def test_keys_are_generated_once_and_kept_private(project, server):
    _, gate = server
    path = project.root / ".maas" / "tenant-keys.json"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert json.loads(path.read_text()) == gate.keys and len(set(gate.keys.values())) == 2
    again, generated = TenantGate.from_manifest(project, env={})
    assert generated == [] and again.keys == gate.keys


def test_two_tenants_with_their_own_models_and_quotas(project, server):
    api, gate = server
    acme, globex = gate.keys["acme"], gate.keys["globex"]
    # no key, or a key no tenant holds: 403 before any function runs
    assert call(api, "/models/minilm/invoke", {"inputs": ["hi"]}, None)[0] == 403
    assert call(api, "/models/minilm/invoke", {"inputs": ["hi"]}, "not-a-key")[0] == 403
    # acme may call every model, pinned versions included
    status, _, body = call(api, "/models/digits/invoke", {"inputs": [IMAGE, IMAGE]}, acme)
    assert status == 200 and body["model"] == "digits"
    status, _, body = call(api, "/models/digits/versions/1.1.0/invoke", {"inputs": [IMAGE]}, acme)
    assert status == 200 and body["version"] == "1.1.0"
    # globex only minilm: digits is refused by digits' own function (403 naming the tenant)
    status, _, body = call(api, "/models/digits/invoke", {"inputs": [IMAGE]}, globex)
    assert status == 403 and body["error"]["code"] == "tenant_forbidden" and "globex" in body["error"]["message"]
    status, _, body = call(api, "/models/minilm/invoke", {"inputs": ["a cat", "a dog"]}, globex)
    assert status == 200 and len(body["outputs"]) == 2, body
    # globex's quota is 3 requests a month: the refused one counted, as API Gateway counts it
    status, _, body = call(api, "/v1/embeddings", {"model": "minilm", "input": "hello"}, globex)
    assert status == 200
    status, headers, body = call(api, "/models/minilm/invoke", {"inputs": ["one more"]}, globex)
    assert status == 429 and body["error"]["code"] == "throttled" and "quota" in body["error"]["message"]
    now = datetime.now(timezone.utc)
    assert 0 < int(headers["Retry-After"]) <= 31 * 86400
    # acme is unaffected
    assert call(api, "/models/minilm/invoke", {"inputs": ["still fine"]}, acme)[0] == 200
    # usage per tenant and model: requests, inputs, tokens
    rows = {(r["tenant"], r["model"]): r for r in json.loads((project.root / ".maas" / "usage.json").read_text())["usage"]}
    assert rows[("acme", "digits")]["requests"] == 2 and rows[("acme", "digits")]["inputs"] == 3
    assert rows[("acme", "minilm")]["requests"] == 1 and rows[("acme", "minilm")]["input_tokens"] > 0
    assert rows[("globex", "digits")] == {**rows[("globex", "digits")], "requests": 1, "inputs": 0}
    assert rows[("globex", "minilm")]["requests"] == 2 and rows[("globex", "minilm")]["inputs"] == 3
    assert all(r["day"] == now.strftime("%Y-%m-%d") for r in rows.values())

    # `maas usage` reads the local API's counters: both tenants, and one with --tenant
    from maas.cli import main

    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["--manifest", str(project.path), "usage", "--local", "--json"]) == 0
    report = json.loads(out.getvalue())
    assert {(r["tenant"], r["model"]) for r in report["usage"]} == set(rows)
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["--manifest", str(project.path), "usage", "--local", "--tenant", "globex"]) == 0
    text = out.getvalue()
    assert "globex" in text and "acme" not in text and "minilm" in text


def test_a_tenant_past_its_rate_gets_429_with_retry_after():
    from maas.manifest import Tenant

    clock = [0.0]
    gate = TenantGate({"t": Tenant(name="t", models=("*",), rate=2, burst=3)}, {"t": "k"}, clock=lambda: clock[0])
    assert [gate.admit("t") for _ in range(3)] == [None, None, None]
    why, retry = gate.admit("t")
    assert "rate" in why and retry == 1
    clock[0] += 0.5  # one token back at 2 a second
    assert gate.admit("t") is None and gate.admit("t") is not None
