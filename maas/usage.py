"""`maas usage`: requests, inputs and input tokens per tenant and model.

Deployed, from CloudWatch: every model function records `requests`, `inputs` and `input_tokens`
by model and tenant (maas_api.function, one EMF record per answered request) in the Maas
namespace, and this sums them with GetMetricData since a date. Locally, from the counters the
local API writes (.maas/usage.json, maas.tenants). Both give the same rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone

from maas_api.constants import METRIC_DIMENSION_MODEL, METRIC_DIMENSION_SERVICE, METRIC_DIMENSION_TENANT
from maas_api.constants import METRICS_NAMESPACE, TENANT_METRICS

from .tenants import STATE_DIR, USAGE_FILE, read_usage

DEFAULT_DAYS = 30
METRIC_QUERIES_PER_CALL = 500
"""GetMetricData's limit on queries in one request."""


@dataclass(frozen=True)
class UsageRow:
    tenant: str
    model: str
    requests: int
    inputs: int
    input_tokens: int


def parse_since(text: str | None, now: datetime | None = None) -> datetime:
    """A date (2026-11-01), a timestamp, or a number of days back ("7d"); default 30 days back."""
    now = now or datetime.now(timezone.utc)
    if not text:
        return now - timedelta(days=DEFAULT_DAYS)
    if text.endswith("d") and text[:-1].isdigit():
        return now - timedelta(days=int(text[:-1]))
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since: {text!r} is neither a date (2026-11-01), a timestamp, nor a number of days (7d)") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _totals(rows) -> list[UsageRow]:
    sums: dict[tuple[str, str], list[int]] = {}
    for tenant, model, requests, inputs, tokens in rows:
        acc = sums.setdefault((tenant, model), [0, 0, 0])
        acc[0] += requests
        acc[1] += inputs
        acc[2] += tokens
    return [UsageRow(t, m, *v) for (t, m), v in sorted(sums.items())]


def local_usage(manifest, tenant: str | None, since: datetime) -> list[UsageRow]:
    """The local API's counters, by UTC day: the days from `since`'s on."""
    first = since.strftime("%Y-%m-%d")
    rows = read_usage(manifest.root / STATE_DIR / USAGE_FILE)
    return _totals((r["tenant"], r["model"], r["requests"], r["inputs"], r["input_tokens"]) for r in rows
                   if r["day"] >= first and (tenant is None or r["tenant"] == tenant))


def cloudwatch_usage(manifest, tenant: str | None, since: datetime, client=None,
                     now: datetime | None = None) -> list[UsageRow]:
    """Sums of the functions' per-tenant metrics from `since` to now, one query per tenant, model and metric."""
    if client is None:
        import boto3

        client = boto3.client("cloudwatch")
    now = now or datetime.now(timezone.utc)
    tenants = [t.name for t in manifest.tenants if tenant is None or t.name == tenant]
    queries, keys = [], {}
    for t in tenants:
        for spec in manifest.models:
            for metric in TENANT_METRICS:
                qid = f"q{len(queries)}"
                keys[qid] = (t, spec.name, metric)
                queries.append({"Id": qid, "ReturnData": True, "MetricStat": {
                    "Metric": {"Namespace": METRICS_NAMESPACE, "MetricName": metric, "Dimensions": [
                        {"Name": METRIC_DIMENSION_SERVICE, "Value": f"maas-{spec.name}"},
                        {"Name": METRIC_DIMENSION_MODEL, "Value": spec.name},
                        {"Name": METRIC_DIMENSION_TENANT, "Value": t},
                    ]},
                    "Period": 86400, "Stat": "Sum", "Unit": "Count"}})
    found: dict[tuple[str, str], dict[str, float]] = {}
    for start in range(0, len(queries), METRIC_QUERIES_PER_CALL):
        token = None
        while True:
            request = {"MetricDataQueries": queries[start:start + METRIC_QUERIES_PER_CALL],
                       "StartTime": since, "EndTime": now}
            if token:
                request["NextToken"] = token
            answer = client.get_metric_data(**request)
            for result in answer["MetricDataResults"]:
                t, model, metric = keys[result["Id"]]
                row = found.setdefault((t, model), {})
                row[metric] = row.get(metric, 0.0) + sum(result.get("Values") or [])
            token = answer.get("NextToken")
            if not token:
                break
    return _totals((t, m, int(v.get("requests", 0)), int(v.get("inputs", 0)), int(v.get("input_tokens", 0)))
                   for (t, m), v in found.items() if any(v.values()))


def render(rows: list[UsageRow], since: datetime, source: str) -> list[str]:
    lines = [f"usage since {since.isoformat(timespec='seconds')} ({source})",
             f"{'tenant':<16} {'model':<16} {'requests':>10} {'inputs':>10} {'input tokens':>13}"]
    lines += [f"{r.tenant:<16} {r.model:<16} {r.requests:>10} {r.inputs:>10} {r.input_tokens:>13}" for r in rows]
    if not rows:
        lines.append("(no requests)")
    return lines


def as_json(rows: list[UsageRow], since: datetime, source: str) -> dict:
    return {"since": since.isoformat(timespec="seconds"), "source": source, "usage": [asdict(r) for r in rows]}
