"""Tenants on the local API (`maas serve`): each tenant's key, rate, quota and usage, as API Gateway's
API keys and usage plans keep them in AWS.

- **Keys** live in .maas/tenant-keys.json (mode 0600, git-ignored), generated on first run: a key
  is printed once, when it is generated, and never logged. `MAAS_TENANT_KEY_<TENANT>` (dashes as
  underscores) overrides a tenant's key, e.g. for CI.
- **Rate** is a token bucket per tenant (`rate` per second, `burst` deep), **quota** a count per
  UTC day or month; past either the answer is 429 with Retry-After, before the body is read and
  before any function runs, as API Gateway answers.
- **Usage** (requests, inputs, input tokens per tenant and model, per UTC day) is counted from each
  answered request and written to .maas/usage.json, which `maas usage` reads.

The check that a tenant may call a model is the function's own (maas_api.tenants), as in AWS:
`maas serve` gives each function the same policy the stack gives it.

Why hand-written: the token bucket and the counters are a few lines each, and the libraries for
them (limits, slowapi) are built around a web framework or a storage backend this server lacks.
"""

from __future__ import annotations

import calendar
import json
import math
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from maas_api.tenants import TenantPolicy

STATE_DIR = ".maas"
KEYS_FILE = "tenant-keys.json"
USAGE_FILE = "usage.json"
ENV_KEY_PREFIX = "MAAS_TENANT_KEY_"


def local_key_id(tenant: str) -> str:
    """The API key id the local API puts in requestContext.identity.apiKeyId (API Gateway's is generated)."""
    return f"local-{tenant}"


def policy_for(manifest, model: str) -> TenantPolicy | None:
    """What the stack configures a model's function with: every tenant's key id, and who may call it."""
    if not manifest.tenants:
        return None
    return TenantPolicy({local_key_id(t.name): t.name for t in manifest.tenants},
                        frozenset(t.name for t in manifest.tenants if t.may_call(model)))


def load_keys(manifest, folder: Path, env=None) -> tuple[dict[str, str], list[str]]:
    """tenant -> key, and the tenants whose key was generated now (to print once)."""
    env = os.environ if env is None else env
    path = folder / KEYS_FILE
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        stored = {}
    keys, generated = {}, []
    for tenant in manifest.tenants:
        override = env.get(ENV_KEY_PREFIX + tenant.name.upper().replace("-", "_"))
        if override:
            keys[tenant.name] = override
            continue
        if not isinstance(stored.get(tenant.name), str):
            stored[tenant.name] = secrets.token_urlsafe(30)
            generated.append(tenant.name)
        keys[tenant.name] = stored[tenant.name]
    if generated:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(stored, fh, indent=2)
    return keys, generated


def read_usage(path: Path) -> list[dict]:
    """The rows the local API has written (none yet: empty)."""
    try:
        return list(json.loads(Path(path).read_text(encoding="utf-8"))["usage"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _period(now: datetime, period: str) -> tuple[str, float]:
    """The quota window holding `now` (its name) and the seconds until it ends."""
    if period == "day":
        end = datetime(now.year, now.month, now.day, tzinfo=timezone.utc).timestamp() + 86400
        return now.strftime("%Y-%m-%d"), end - now.timestamp()
    days = calendar.monthrange(now.year, now.month)[1]
    end = datetime(now.year, now.month, 1, tzinfo=timezone.utc).timestamp() + days * 86400
    return now.strftime("%Y-%m"), end - now.timestamp()


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class TenantGate:
    """Keys, throttles, quotas and usage counters for the local API (thread-safe)."""

    tenants: dict
    """name -> maas.manifest.Tenant"""
    keys: dict[str, str]
    """name -> key"""
    usage_path: Path | None = None
    clock: callable = time.monotonic
    now: callable = lambda: datetime.now(timezone.utc)  # noqa: E731 - a seam for tests
    _by_key: dict = field(default_factory=dict)
    _buckets: dict = field(default_factory=dict)
    _quota: dict = field(default_factory=dict)
    _usage: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self):
        self._by_key = {key.encode(): name for name, key in self.keys.items()}

    @classmethod
    def from_manifest(cls, manifest, env=None) -> tuple["TenantGate", list[str]]:
        folder = manifest.root / STATE_DIR
        keys, generated = load_keys(manifest, folder, env)
        gate = cls({t.name: t for t in manifest.tenants}, keys, folder / USAGE_FILE)
        gate._usage = {(r["day"], r["tenant"], r["model"]): {k: int(r[k]) for k in ("requests", "inputs", "input_tokens")}
                       for r in read_usage(gate.usage_path)}
        return gate, generated

    def tenant_of(self, key: str | None) -> str | None:
        """The tenant holding this key (compared in constant time against each)."""
        given = (key or "").encode("utf-8", "surrogateescape")
        found = None
        for candidate, name in self._by_key.items():
            if secrets.compare_digest(given, candidate):
                found = name
        return found

    def admit(self, tenant: str) -> tuple[str, int] | None:
        """None to let the request in, else (why, Retry-After seconds): its rate or its quota."""
        spec = self.tenants[tenant]
        with self._lock:
            now = self.clock()
            bucket = self._buckets.setdefault(tenant, _Bucket(float(spec.burst), now))
            bucket.tokens = min(float(spec.burst), bucket.tokens + (now - bucket.at) * spec.rate)
            bucket.at = now
            if bucket.tokens < 1:
                return (f"tenant {tenant!r} is over its rate ({spec.rate:g}/s, burst {spec.burst})",
                        max(1, math.ceil((1 - bucket.tokens) / spec.rate)))
            if spec.quota is not None:
                window, left_s = _period(self.now(), spec.quota_period)
                used = self._quota.get((tenant, window), 0)
                if used >= spec.quota:
                    return (f"tenant {tenant!r} has used its quota ({spec.quota} requests a {spec.quota_period})",
                            max(1, math.ceil(left_s)))
                self._quota[(tenant, window)] = used + 1
            bucket.tokens -= 1
        return None

    def record(self, tenant: str, model: str | None, status: int, body: bytes) -> None:
        """Count an answered request: inputs and tokens from a successful answer's `usage`."""
        inputs = tokens = 0
        if 200 <= status < 300:
            try:
                answer = json.loads(body)
                usage = answer.get("usage") or {}
                model = answer.get("model") or model
                inputs = len(answer.get("outputs") or answer.get("data") or [])
                tokens = int(usage.get("input_tokens", usage.get("prompt_tokens", 0)))
            except (ValueError, AttributeError, TypeError):
                pass
        day = self.now().strftime("%Y-%m-%d")
        with self._lock:
            row = self._usage.setdefault((day, tenant, model or "-"), {"requests": 0, "inputs": 0, "input_tokens": 0})
            row["requests"] += 1
            row["inputs"] += inputs
            row["input_tokens"] += tokens
            self._write()

    def _write(self) -> None:
        if self.usage_path is None:
            return
        rows = [{"day": d, "tenant": t, "model": m, **c} for (d, t, m), c in sorted(self._usage.items())]
        self.usage_path.parent.mkdir(parents=True, exist_ok=True)
        work = self.usage_path.with_name(self.usage_path.name + ".tmp")
        work.write_text(json.dumps({"usage": rows}, indent=1), encoding="utf-8")
        os.replace(work, self.usage_path)
