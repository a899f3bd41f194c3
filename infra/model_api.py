"""ModelApi: one API Gateway REST API in front of every model's function.

Its resources and methods are generated from the API's route table (maas_api.routes): each
model's routes (`add_model_routes`, only those its task has) go to that model's own function
alias; the shared routes (`add_shared_routes`) go to the default function. Every method needs an
API key (x-api-key), bound to a usage plan with throttling and a quota. A route with a JSON body
is validated against a JSON-schema model (made from the route's request model, with the model's
batch limit) before any function runs; the stage (`prod`) has access logs in JSON to a log group
with retention, X-Ray tracing, per-method metrics and ERROR execution logs. Gateway errors
(unknown route, bad key, invalid body, too large, throttled) answer with the API's JSON error
envelope.

Throttling: besides the stage's and the usage plan's limits, every method is throttled to its
function's share of what that function can take (`RouteLimits`), so that a burst is answered
with API Gateway's 429 (with Retry-After) rather than reaching Lambda's concurrency limit, which
API Gateway reports to the client as a 500.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from aws_cdk import Annotations, Fn, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct
from pydantic import BaseModel

from maas_api.constants import ENV_ALLOWED_TENANTS, ENV_TENANT_KEY_IDS, JSON, MAX_BODY_BYTES
from maas_api.routes import RouteSpec, model_routes, shared_routes, version_routes

from .nag import acknowledge

STAGE = "prod"
QUOTA_PERIODS = {"day": apigw.Period.DAY, "month": apigw.Period.MONTH}
"""The manifest's tenants.<name>.quota_period, as a usage plan's."""
RETRY_AFTER_S = 1
"""What a throttled client is told to wait (the gateway's token bucket refills every second)."""


@dataclass(frozen=True)
class ModelApiProps:
    """Throttling, quota, logging; every field has its default here and nowhere else."""

    rate_limit: float = 50
    """Steady requests per second, per stage and per API key."""
    burst_limit: int = 100
    """Requests allowed at once above the steady rate."""
    quota_per_day: int = 100_000
    """Requests per API key per day."""
    lambda_concurrency: int = 1000
    """The Lambda concurrency quota of the account and region deployed to (AWS's default; a new
    account may start far lower: `aws lambda get-account-settings`). The stack's functions share
    it; each model's routes are throttled to its function's share of it."""
    mean_invocation_s: float = 1.0
    """The mean time an invocation is assumed to take when a concurrency budget is turned into a
    request rate (Little's law: rate = concurrency / duration). Warm demo models answer in
    milliseconds, so one second leaves room for batches and cold starts."""
    cloud_watch_role: bool = False
    """Create API Gateway's CloudWatch role and set it on the account (one setting per account and
    region, shared by every REST API there): only where nothing has set it yet. Created with
    RETAIN, so deleting this stack never takes logging away from other APIs."""
    log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH
    """How long access logs are kept."""


@dataclass(frozen=True)
class RouteLimits:
    """What one model's function can take; its routes let through no more than that."""

    max_batch: int
    """Inputs per request (the manifest's serving.max_batch): maxItems in the gateway's request models."""
    concurrency: int
    """Invocations the function can count on at once (reserved, or its share of the account's)."""
    rate: float
    """Requests per second the model can answer (its concurrency over the mean invocation time,
    or less when an endpoint behind it takes less)."""


@dataclass(frozen=True)
class ApiModel:
    """A model whose routes this API serves, and its limits."""

    name: str
    task: str
    limits: RouteLimits
    versions: tuple[str, ...] = ()
    """The kept versions, each with its pinned routes (/models/<name>/versions/<version>/...)."""
    side_by_side: bool = False
    """Each version has its own function rather than the model's."""
    version_limits: Mapping[str, RouteLimits] = field(default_factory=dict)
    """Side by side: what each version's own function can take."""

    def answers(self, version: str | None) -> str:
        """Which function answers a route of this model (pinned to `version`, or not): the model's, or a version's."""
        return f"{self.name}@{version}" if version is not None and self.side_by_side else self.name

    def limits_of(self, function: str) -> RouteLimits:
        """The limits of one of its functions (`answers`)."""
        return self.version_limits[function.split("@", 1)[1]] if "@" in function else self.limits


def _error_template(code: str, message: str) -> dict:
    """The API's error envelope as a gateway response template.

    Gateway response templates are not VTL: API Gateway only substitutes `$context` variables, so
    nothing can be escaped there. `message` is therefore either a literal JSON string or
    `$context.error.messageString` (documented as the quoted, JSON-ready message); variables that
    may carry quotes (validationErrorString, the client's path) are never put inside a string.
    """
    body = (
        '{"error": {"code": "' + code + '", "message": ' + message + '}, '
        '"request_id": "$context.requestId", "message": $context.error.messageString}'
    )
    return {JSON: body}


GATEWAY_RESPONSES = (
    # (construct id: kept stable, since a gateway response re-created under a new id is reset to
    #  AWS's default when the old one is deleted; type; status; code; message: a JSON string
    #  literal or $context.error.messageString; extra headers)
    ("NotFoundResponse", apigw.ResponseType.MISSING_AUTHENTICATION_TOKEN, "404", "not_found",
     '"no such route or method; GET /openapi.json lists the API"', {}),
    ("ForbiddenResponse", apigw.ResponseType.INVALID_API_KEY, "403", "forbidden",
     '"a valid x-api-key header is required"', {}),
    # The validator's own detail (validationErrorString) holds quotes and cannot be put in JSON
    # here: the message says what the validator checks; API Gateway's message stays in "message".
    ("ValidationErrorResponse", apigw.ResponseType.BAD_REQUEST_BODY, "422", "validation_error",
     '"the request body does not fit this route\'s schema (required fields, their types, at most the model\'s '
     'serving.max_batch inputs); GET /openapi.json describes it"', {}),
    ("PayloadTooLargeResponse", apigw.ResponseType.REQUEST_TOO_LARGE, "413", "payload_too_large",
     f'"the request is too large; send at most {MAX_BODY_BYTES} bytes"', {}),
    ("ThrottledResponse", apigw.ResponseType.THROTTLED, "429", "throttled", '"too many requests; retry with backoff"',
     {"Retry-After": f"'{RETRY_AFTER_S}'"}),
    ("QuotaExceededResponse", apigw.ResponseType.QUOTA_EXCEEDED, "429", "quota_exceeded",
     '"the API key\'s daily quota is used up"', {}),
    # Every other 4xx (an authorizer's or WAF's refusal, a bad parameter): the gateway's own type as the code.
    ("Default4xxResponse", apigw.ResponseType.DEFAULT_4_XX, None, "$context.error.responseType",
     "$context.error.messageString", {}),
    ("GatewayErrorResponse", apigw.ResponseType.DEFAULT_5_XX, None, "gateway_error", "$context.error.messageString", {}),
)


_JSON_TYPES = {
    "array": apigw.JsonSchemaType.ARRAY,
    "boolean": apigw.JsonSchemaType.BOOLEAN,
    "integer": apigw.JsonSchemaType.INTEGER,
    "null": apigw.JsonSchemaType.NULL,
    "number": apigw.JsonSchemaType.NUMBER,
    "object": apigw.JsonSchemaType.OBJECT,
    "string": apigw.JsonSchemaType.STRING,
}


def gateway_schema(model: type[BaseModel], max_items: int | None = None) -> apigw.JsonSchema:
    """A shallow draft-4 copy of a request model for API Gateway's validator.

    Required fields, each field's JSON type(s), minItems and minLength: enough to turn away a
    body that is not the right shape before a function is billed. With `max_items` (a model's
    batch limit), every array of the body gets it as maxItems: in the request models of the route
    table, the arrays are the batch of inputs (maxItems does not apply to a value that is not an
    array, such as the single-string OpenAI `input`). The function validates the whole model,
    with messages that name the problem.
    """
    schema = model.model_json_schema()
    properties = {}
    for name, prop in schema["properties"].items():
        types = [_JSON_TYPES[variant["type"]] for variant in prop.get("anyOf", [prop]) if "type" in variant]
        properties[name] = apigw.JsonSchema(
            type=(types[0] if len(types) == 1 else types) or None,
            min_items=prop.get("minItems"),
            max_items=max_items if apigw.JsonSchemaType.ARRAY in types else None,
            min_length=prop.get("minLength"),
        )
    return apigw.JsonSchema(
        schema=apigw.JsonSchemaVersion.DRAFT4,
        title=schema["title"],
        type=apigw.JsonSchemaType.OBJECT,
        required=schema.get("required"),
        properties=properties,
    )


def method_key(spec: RouteSpec, path: str) -> str:
    """A stage's method-settings key: /models/minilm/invoke/POST."""
    return f"{path}/{spec.method}"


class ModelApi(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: ModelApiProps, models: Sequence[ApiModel],
                 default: str, tenants: Sequence = ()) -> None:
        super().__init__(scope, construct_id)
        self.props = props
        self.models = {m.name: m for m in models}
        self.default = self.models[default]
        self.access_logs = logs.LogGroup(
            self, "AccessLogs", retention=props.log_retention, removal_policy=RemovalPolicy.DESTROY
        )
        self.method_limits = self._method_limits()
        self.api = apigw.RestApi(
            self,
            "Api",
            # The stack's name makes it unique in the region: the alarms' ApiName dimension is this name.
            rest_api_name=f"{Stack.of(self).stack_name}-api",
            description="maas: models behind one API (routes per model, API key required)",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=props.cloud_watch_role,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN if props.cloud_watch_role else None,
            deploy_options=apigw.StageOptions(
                stage_name=STAGE,
                tracing_enabled=True,
                metrics_enabled=True,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # request bodies (user data) stay out of the logs
                throttling_rate_limit=props.rate_limit,
                throttling_burst_limit=props.burst_limit,
                method_options={
                    key: apigw.MethodDeploymentOptions(throttling_rate_limit=rate, throttling_burst_limit=burst)
                    for key, (rate, burst) in self.method_limits.items()
                },
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=_access_log_format(),
            ),
            default_method_options=apigw.MethodOptions(api_key_required=True),
        )
        self.body_validator = self.api.add_request_validator(
            "BodyValidator", validate_request_body=True, validate_request_parameters=True
        )
        self.request_models: dict[tuple[type, int], apigw.Model] = {}
        for response_id, response_type, status, code, message, headers in GATEWAY_RESPONSES:
            self.api.add_gateway_response(
                response_id,
                type=response_type,
                status_code=status,
                response_headers=headers or None,
                templates=_error_template(code, message),
            )
        self.api_key: apigw.IApiKey | None = None
        self.tenant_keys: dict[str, apigw.IApiKey] = {}
        if tenants:
            self._add_tenants(tenants)
        else:
            self.api_key = self.api.add_api_key("ApiKey", description="maas default API key")
            self.usage_plan = self.api.add_usage_plan(
                "UsagePlan",
                description="maas default usage plan",
                throttle=apigw.ThrottleSettings(rate_limit=props.rate_limit, burst_limit=props.burst_limit),
                quota=apigw.QuotaSettings(limit=props.quota_per_day, period=apigw.Period.DAY),
                api_stages=[apigw.UsagePlanPerApiStage(api=self.api, stage=self.api.deployment_stage)],
            )
            self.usage_plan.add_api_key(self.api_key)

        for rule, reason in (
            ("AwsSolutions-APIG3", "No WAF by default (cost and per-account rules); requests need an API key and are "
             "throttled per key and per stage. Attach a WebACL to the prod stage for public traffic."),
            ("AwsSolutions-APIG4", "Clients authenticate with API keys bound to a usage plan; an IAM or Cognito authorizer "
             "is for per-user identity, which this service does not model."),
            ("AwsSolutions-COG4", "No Cognito user pool: API keys with a usage plan (see APIG4)."),
        ):
            acknowledge(self.api, rule, reason)
        if props.cloud_watch_role:
            acknowledge(
                self.api, "AwsSolutions-IAM4",
                "API Gateway's account-level CloudWatch role uses AWS's managed AmazonAPIGatewayPushToCloudWatchLogs, "
                "the policy AWS documents for it.",
                findings=("Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs",),
            )

    # --- tenants ----------------------------------------------------------------------------------

    def _add_tenants(self, tenants: Sequence) -> None:
        """One API key and one usage plan per tenant (maas.manifest.Tenant): its rate, burst and quota.
        API Gateway generates each key's value, so no secret is in the template, its outputs or any
        log; the stack outputs each key's id."""
        for tenant in tenants:
            cid = "".join(part.capitalize() for part in tenant.name.split("-"))
            # Not api.add_api_key: that ties the key to the stage, and the functions (which the stage's
            # methods call) name the key's id, a cycle. The usage plan binds the key to the stage.
            key = apigw.ApiKey(self, f"Key{cid}", api_key_name=f"{Stack.of(self).stack_name}-{tenant.name}",
                               description=f"maas tenant {tenant.name}")
            plan = self.api.add_usage_plan(
                f"Plan{cid}",
                name=f"{Stack.of(self).stack_name}-{tenant.name}",
                description=f"maas tenant {tenant.name}: models {', '.join(tenant.models)}",
                throttle=apigw.ThrottleSettings(rate_limit=tenant.rate, burst_limit=tenant.burst),
                quota=(apigw.QuotaSettings(limit=tenant.quota, period=QUOTA_PERIODS[tenant.quota_period])
                       if tenant.quota is not None else None),
                api_stages=[apigw.UsagePlanPerApiStage(api=self.api, stage=self.api.deployment_stage)],
            )
            plan.add_api_key(key)
            self.tenant_keys[tenant.name] = key

    def tenant_environment(self, tenants: Sequence, model: str) -> dict[str, str]:
        """What a model's function needs to name each request's tenant and refuse the others (maas_api.tenants)."""
        if not tenants:
            return {}
        return {
            ENV_TENANT_KEY_IDS: Fn.join(",", [Fn.join("=", [t.name, self.tenant_keys[t.name].key_id]) for t in tenants]),
            ENV_ALLOWED_TENANTS: ",".join(t.name for t in tenants if t.may_call(model)),
        }

    # --- routes -----------------------------------------------------------------------------------

    def routes(self) -> list[tuple[RouteSpec, str, ApiModel, str]]:
        """Every method of the API: its route, its concrete path, the model and the function that answers."""
        found = [(spec, spec.render(name=m.name), m, m.answers(None))
                 for m in self.models.values() for spec in model_routes(m.task)]
        found += [(spec, spec.render(name=m.name, version=v), m, m.answers(v))
                  for m in self.models.values() for v in m.versions for spec in version_routes(m.task)]
        return found + [(spec, spec.path, self.default, self.default.name) for spec in shared_routes()]

    def _method_limits(self) -> dict[str, tuple[float, int]]:
        """(rate, burst) per method: its function's limits shared equally by the methods it answers,
        never above the stage's own. A burst is at least 1 (0 would close the route), so a function
        with fewer concurrent executions than methods is warned about at synth."""
        routes = self.routes()
        methods = Counter(function for *_, function in routes)
        for function, count in methods.items():
            model = self.models[function.split("@")[0]]
            if model.limits_of(function).concurrency < count:
                Annotations.of(self).add_warning_v2(
                    "maas:concurrencyBelowRoutes",
                    f"{function}: {count} routes share {model.limits_of(function).concurrency} concurrent executions; each "
                    "route still lets 1 request through at a time, so Lambda may throttle (raise its concurrency)",
                )
        limits = {}
        for spec, path, model, function in routes:
            share = methods[function]
            own = model.limits_of(function)
            rate = min(self.props.rate_limit, own.rate / share)
            burst = min(self.props.burst_limit, max(1, own.concurrency // share))
            # rounded down: the methods of one function together never exceed its rate
            limits[method_key(spec, path)] = (max(0.001, math.floor(rate * 1000) / 1000), burst)
        return limits

    def add_model_routes(self, name: str, target: lambda_.IFunction) -> None:
        """The model routes a model of its task has (/models/<name>, /models/<name>/invoke, ...), to its function."""
        model = self.models[name]
        for spec in model_routes(model.task):
            self._add(spec, spec.render(name=name), target, model.limits)

    def add_version_routes(self, name: str, version: str, target: lambda_.IFunction) -> None:
        """One kept version's pinned routes (/models/<name>/versions/<version>/...), to the function serving it."""
        model = self.models[name]
        for spec in version_routes(model.task):
            self._add(spec, spec.render(name=name, version=version), target, model.limits_of(model.answers(version)))

    def add_shared_routes(self, target: lambda_.IFunction) -> None:
        """The shared routes (GET /models, /health, /openapi.json, POST /v1/embeddings), to the default function."""
        for spec in shared_routes():
            self._add(spec, spec.path, target, self.default.limits)

    def _add(self, spec: RouteSpec, path: str, target: lambda_.IFunction, limits: RouteLimits) -> apigw.Method:
        options = {}
        if spec.request is not None:
            options = dict(
                request_validator=self.body_validator,
                request_models={JSON: self._request_model(spec.request, limits.max_batch)},
            )
        resource = self.api.root.resource_for_path(path)
        return resource.add_method(spec.method, apigw.LambdaIntegration(target, proxy=True), **options)

    def _request_model(self, request: type[BaseModel], max_batch: int) -> apigw.Model:
        """One API Gateway model per request model and batch limit, made on first use."""
        key = (request, max_batch)
        if key not in self.request_models:
            name = f"{request.__name__}{max_batch}"
            self.request_models[key] = self.api.add_model(
                name, content_type=JSON, model_name=name, schema=gateway_schema(request, max_batch)
            )
        return self.request_models[key]

    @property
    def url(self) -> str:
        return self.api.url


def _access_log_format() -> apigw.AccessLogFormat:
    """JSON access logs with the integration's own status: a 5xx whose integration status is 429
    was Lambda throttling, 413 an event over Lambda's 6 MB. Only fields API Gateway generates
    (no error messages, which may hold quotes and break the line's JSON)."""
    field = apigw.AccessLogField
    return apigw.AccessLogFormat.custom(json.dumps({
        "requestId": field.context_request_id(),
        "ip": field.context_identity_source_ip(),
        "requestTime": field.context_request_time(),
        "httpMethod": field.context_http_method(),
        "resourcePath": field.context_resource_path(),
        "status": field.context_status(),
        "protocol": field.context_protocol(),
        "responseLength": field.context_response_length(),
        "responseLatency": field.context_response_latency(),
        "integrationStatus": field.context_integration_status(),
        "integrationLatency": field.context_integration_latency(),
        "errorType": field.context_error_response_type(),
        "apiKeyId": field.context_identity_api_key_id(),
    }))
