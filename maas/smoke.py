"""`maas smoke --url URL --api-key KEY`: check a deployed API end to end, right after `cdk deploy`.

What a client of the API can see, over HTTPS, and nothing else: the catalog (GET /models) lists
exactly the manifest's models, at the manifest's versions and targets; every model answers its
smoke input (derived from its card's `inputs`, the only thing a remote client knows about it);
a request without the API key is refused with the JSON 403; a malformed body, a body that breaks
the schema and an unknown route get JSON 4xx answers in the API's error envelope.

The smoke input is the task's own example batch for the card (maas_runtime's
`Task.example_inputs`, what /health runs too): this command sends it, and the CDK app gives it to
each model's pre-traffic hook (`version_checks`), which sends it to a new version before
CodeDeploy shifts any traffic to it.

The HTTP client is the standard library's urllib: one request per check, no retries (a flapping
answer right after a deploy is a finding, not noise to smooth over).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

from maas_api.catalog import Catalog
from maas_api.constants import API_KEY_HEADER, JSON
from maas_api.routes import INVOKE, route
from maas_runtime.card import ModelCard
from maas_runtime.tasks import task_for

TIMEOUT_S = 35.0
"""Per request: above API Gateway's 29 s integration limit, so a slow model shows as its 504."""
"""What GET /models/{name} adds to the model card (maas_api.catalog)."""


def smoke_inputs(card: ModelCard) -> list:
    """A small batch the model accepts, from its card alone (all a remote client has of it)."""
    return task_for(card.task).example_inputs(card)


def version_checks(name: str, card: ModelCard) -> list[dict]:
    """What a model function's pre-traffic hook sends a new version, and what each answer must hold.

    Each check: {"method", "path", "body" (JSON or None), "expect" (keys the JSON answer must have
    with these values)}; the hook also requires status 200 and, for a batch, one output per input.
    """
    invoke = route(INVOKE)
    health = route("health")
    return [
        {"method": health.method, "path": health.path, "body": None, "expect": {"status": "ok", "model": name}},
        {"method": invoke.method, "path": invoke.render(name=name), "body": {"inputs": smoke_inputs(card)},
         "expect": {"model": name}},
    ]


# --- the checks against a running API ------------------------------------------------------------


class SmokeFailure(Exception):
    """One check failed; the message says what was expected and what came back."""


@dataclass
class Answer:
    status: int
    headers: dict
    body: object
    """The parsed JSON answer, or None when it is not JSON."""
    text: str


@dataclass
class Check:
    name: str
    passed: bool | None
    """None: skipped."""
    detail: str = ""
    seconds: float = 0.0


@dataclass
class SmokeReport:
    url: str
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed is not False for c in self.checks)

    def lines(self) -> list[str]:
        marks = {True: "ok  ", False: "FAIL", None: "skip"}
        out = [f"{marks[c.passed]} {c.name} ({c.seconds:.2f} s){': ' + c.detail if c.detail else ''}" for c in self.checks]
        failed = sum(c.passed is False for c in self.checks)
        out.append(f"{len(self.checks) - failed}/{len(self.checks)} checks passed on {self.url}" if not failed
                   else f"{failed} of {len(self.checks)} checks FAILED on {self.url}")
        return out


class Client:
    """The API at `url` (the ApiUrl output, e.g. https://<id>.execute-api.<region>.amazonaws.com/prod/)."""

    def __init__(self, url: str, api_key: str | None, timeout: float = TIMEOUT_S):
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def request(self, method: str, path: str, body: object = None, raw: bytes | None = None,
                with_key: bool = True) -> Answer:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Accept": JSON}
        if data is not None:
            headers["Content-Type"] = JSON
        if with_key and self.api_key:
            headers[API_KEY_HEADER] = self.api_key
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return _answer(response.status, response.headers, response.read())
        except urllib.error.HTTPError as exc:
            return _answer(exc.code, exc.headers, exc.read())


def _answer(status: int, headers, data: bytes) -> Answer:
    text = data.decode("utf-8", "replace")
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
    return Answer(status, dict(headers or {}), body, text)


def _show(answer: Answer) -> str:
    return f"HTTP {answer.status}: {answer.text[:300]!r}"


def _expect_ok(answer: Answer) -> dict:
    if answer.status != 200 or not isinstance(answer.body, dict):
        raise SmokeFailure(f"expected HTTP 200 with a JSON object, got {_show(answer)}")
    return answer.body


def _expect_error(answer: Answer, statuses: range | tuple, what: str) -> str:
    """The answer is one of `statuses` in the API's JSON error envelope; returns its code."""
    error = answer.body.get("error") if isinstance(answer.body, dict) else None
    if answer.status not in statuses or not isinstance(error, dict) or not error.get("code") or not error.get("message"):
        raise SmokeFailure(f"{what}: expected a JSON error envelope with status {_statuses(statuses)}, got {_show(answer)}")
    return f"HTTP {answer.status} {error['code']}"


def _statuses(statuses) -> str:
    return "4xx" if isinstance(statuses, range) else "/".join(map(str, statuses))


def public_card(body: dict) -> ModelCard:
    """A model card as GET /models/{name} answers it, read (and so validated) by this kit's reader."""
    return ModelCard.from_dict({k: v for k, v in body.items() if k not in Catalog.CARD_EXTRAS})


def run_smoke(url: str, api_key: str | None, manifest) -> SmokeReport:
    """Every check against the API at `url`; the manifest is what the catalog must list."""
    client = Client(url, api_key)
    report = SmokeReport(client.url)
    state: dict = {}

    def check(name: str, run: Callable[[], str | None], skip: str | None = None) -> None:
        if skip:
            report.checks.append(Check(name, None, skip))
            return
        started = time.perf_counter()
        try:
            detail = run() or ""
            passed = True
        except SmokeFailure as exc:
            detail, passed = str(exc), False
        except OSError as exc:  # refused, reset, DNS, TLS, timeout: the API cannot be reached
            detail, passed = f"cannot reach {client.url}: {exc}", False
        report.checks.append(Check(name, passed, detail, time.perf_counter() - started))

    def catalog() -> str:
        listed = _expect_ok(client.request("GET", route("list_models").path)).get("models")
        if not isinstance(listed, list):
            raise SmokeFailure("GET /models has no `models` list")
        state["models"] = {m["name"]: m for m in listed}
        deployed = {(m["name"], m["version"], m["target"]) for m in listed}
        wanted = {(s.name, s.version, s.target) for s in manifest.models}
        if deployed != wanted:
            raise SmokeFailure(f"the catalog lists {sorted(deployed)}; the manifest has {sorted(wanted)}")
        return f"{len(deployed)} models: {', '.join(sorted(n for n, _, _ in deployed))}"

    def health() -> str:
        body = _expect_ok(client.request("GET", route("health").path))
        if body.get("status") != "ok":
            raise SmokeFailure(f"the default function reports {body}")
        return f"{body.get('model')} {body.get('version')}"

    def answers(name: str) -> Callable[[], str]:
        def run() -> str:
            card = public_card(_expect_ok(client.request("GET", route("get_model").render(name=quote(name, safe="")))))
            inputs = smoke_inputs(card)
            path = state["models"][name].get("invoke_path") or route(INVOKE).render(name=quote(name, safe=""))
            state.setdefault("smoke", {})[name] = (path, inputs)
            body = _expect_ok(client.request(route(INVOKE).method, path, {"inputs": inputs}))
            if body.get("model") != name or body.get("version") != card.version:
                raise SmokeFailure(f"answered as {body.get('model')} {body.get('version')}, not {name} {card.version}")
            if not isinstance(body.get("outputs"), list) or len(body["outputs"]) != len(inputs):
                raise SmokeFailure(f"expected {len(inputs)} output(s), got {str(body.get('outputs'))[:200]}")
            return f"{card.task}, version {card.version}"
        return run

    def invoke_path() -> str:
        name = sorted(state["models"])[0]
        return route(INVOKE).render(name=quote(name, safe=""))

    def refused(with_key: bool, key: str | None) -> Callable[[], str]:
        """A request that would succeed with the key (a model's smoke request), sent without a valid one."""
        def run() -> str:
            path, inputs = next(iter(state.get("smoke", {}).values()), (invoke_path(), ["maas smoke"]))
            answer = Client(client.url, key).request(route(INVOKE).method, path, {"inputs": inputs}, with_key=with_key)
            return _expect_error(answer, (401, 403), "a request without a valid API key")
        return run

    check("the catalog matches the manifest", catalog)
    check("GET /health answers ok", health)
    listed = state.get("models") or {}
    for spec in manifest.models:
        check(f"{spec.name} answers its smoke input", answers(spec.name),
              skip=None if spec.name in listed else "not in the catalog")
    no_catalog = None if listed else "no catalog to pick a model from"
    no_key = None if api_key else "no --api-key given: the API was not expected to need one"
    check("a request without an API key is refused", refused(False, None), skip=no_catalog or no_key)
    check("a request with a wrong API key is refused", refused(True, "maas-smoke-not-a-key"), skip=no_catalog or no_key)
    check("a malformed JSON body gets a JSON 4xx",
          lambda: _expect_error(client.request(route(INVOKE).method, invoke_path(), raw=b'{"inputs": ['),
                                range(400, 500), "a malformed body"), skip=no_catalog)
    check("a body that breaks the schema gets a JSON 4xx",
          lambda: _expect_error(client.request(route(INVOKE).method, invoke_path(), {"inputs": "not a list"}),
                                range(400, 500), "a body that breaks the schema"), skip=no_catalog)
    check("an unknown route gets a JSON 404",
          lambda: _expect_error(client.request("GET", "/maas-smoke/no-such-route"), (404,), "an unknown route"))
    return report
