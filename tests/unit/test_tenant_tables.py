"""The [tenants] tables and the function's tenant policy: names, limits and refusals named precisely."""

from pathlib import Path

import pytest

from maas.manifest import ManifestError, parse_manifest
from maas_api.errors import Forbidden
from maas_api.tenants import TenantPolicy

MODELS = """
[models.tiny]
version = "1.0.0"
task = "embedding"
source = { type = "huggingface", path = "models/tiny" }
serving = { max_batch = 8, max_sequence_length = 64 }
parity = { min_cosine = 0.98 }
"""


def parse(tenants: str):
    return parse_manifest(MODELS + tenants, Path("/project/models.toml"))


def test_defaults_are_written_once_on_the_table():
    (tenant,) = parse('[tenants.acme]\nmodels = ["tiny"]\n').tenants
    assert (tenant.rate, tenant.burst, tenant.quota, tenant.quota_period) == (10.0, 20, None, "day")
    assert tenant.may_call("tiny") and not tenant.may_call("other")
    assert parse("").tenants == ()


@pytest.mark.parametrize("table, message", [
    ('[tenants.acme]\nmodels = ["nope"]', "tenants.acme.models: unknown model 'nope' (the manifest has: tiny)"),
    ("[tenants.acme]\nmodels = []", "tenants.acme.models: must name at least one model"),
    ('[tenants.acme]\nmodels = ["tiny"]\nquota = 0', "tenants.acme.quota: must be an integer in [1, 1000000000], got 0"),
    ('[tenants.acme]\nmodels = ["tiny"]\nquota_period = "week"', "tenants.acme.quota_period: must be one of day, month"),
    ('[tenants.acme]\nmodels = ["tiny"]\nrate = -1', "tenants.acme.rate: must be a number"),
    ('[tenants.acme]\nmodels = ["tiny"]\ncolour = 1', "tenants.acme: unknown key(s) 'colour'"),
    ('[tenants.Acme_Co]\nmodels = ["tiny"]', "tenants.Acme_Co: tenant names must match"),
    ("[tenants.acme]", "tenants.acme.models: missing required key"),
])
def test_mistakes_name_the_tenant_and_key(table, message):
    with pytest.raises(ManifestError) as caught:
        parse(table)
    assert message in str(caught.value)


def _event(key_id):
    return {"requestContext": {"identity": {"apiKeyId": key_id, "apiKey": "secret-never-read"}}}


def test_the_policy_names_the_tenant_and_refuses_the_others():
    policy = TenantPolicy.from_env({"MAAS_TENANT_KEY_IDS": "acme=k1,globex=k2", "MAAS_ALLOWED_TENANTS": "acme"})
    assert policy.tenant(_event("k1")) == "acme" and policy.tenant(_event("k2")) == "globex"
    policy.check(_event("k1"), "digits")
    with pytest.raises(Forbidden, match="tenant 'globex' may not call model 'digits'"):
        policy.check(_event("k2"), "digits")
    with pytest.raises(Forbidden, match="this API key may not"):
        policy.check(_event("unknown"), "digits")
    # no tenant rules: every caller the gateway lets in
    TenantPolicy.from_env({}).check(_event(None), "digits")
    # a model no tenant may call refuses everyone
    with pytest.raises(Forbidden):
        TenantPolicy.from_env({"MAAS_TENANT_KEY_IDS": "acme=k1", "MAAS_ALLOWED_TENANTS": ""}).check(_event("k1"), "x")
