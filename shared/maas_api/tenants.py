"""Which tenant a request comes from, and whether it may call this function's model.

API Gateway checks a tenant's key, throttle and quota (its usage plan), and puts the key's id in
requestContext.identity.apiKeyId. A usage plan cannot forbid a method, so the model's own
function refuses (403) a tenant it does not serve. The key's value (identity.apiKey) is never read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from .constants import ENV_ALLOWED_TENANTS, ENV_TENANT_KEY_IDS
from .errors import Forbidden


@dataclass(frozen=True)
class TenantPolicy:
    key_ids: Mapping[str, str]
    """API key id -> tenant name."""
    allowed: frozenset[str] | None
    """The tenants that may call this model; None: no tenant rules (every caller API Gateway lets in)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "TenantPolicy":
        env = os.environ if env is None else env
        pairs = [p.split("=", 1) for p in (env.get(ENV_TENANT_KEY_IDS) or "").split(",") if "=" in p]
        allowed = env.get(ENV_ALLOWED_TENANTS)
        return cls({key_id.strip(): name.strip() for name, key_id in pairs},
                   None if allowed is None else frozenset(t.strip() for t in allowed.split(",") if t.strip()))

    @staticmethod
    def key_id(event: dict) -> str | None:
        return (((event or {}).get("requestContext") or {}).get("identity") or {}).get("apiKeyId")

    def tenant(self, event: dict) -> str | None:
        """The tenant whose key made this request, if it is one."""
        return self.key_ids.get(self.key_id(event) or "")

    def check(self, event: dict, model: str) -> None:
        """Raise 403 when tenant rules apply and this request's tenant may not call `model`."""
        if self.allowed is None:
            return
        tenant = self.tenant(event)
        if tenant is None or tenant not in self.allowed:
            who = f"tenant {tenant!r}" if tenant else "this API key"
            raise Forbidden(f"{who} may not call model {model!r}", code="tenant_forbidden")
