"""ModelApi: one API Gateway REST API in front of every model's function.

Its resources and methods are generated from the API's route table (maas_api.routes): each
model's routes (`add_model_routes`, only those its task has) go to that model's own function
alias; the shared routes (`add_shared_routes`) go to the default function. Every method needs an
API key (x-api-key), bound to a usage plan with throttling and a quota. A route with a JSON body
is validated against a JSON-schema model (made from the route's request model) before any
function runs; the stage (`prod`) has access logs in JSON to a log group with retention, X-Ray
tracing, per-method metrics and ERROR execution logs. Gateway errors (unknown route, bad key,
invalid body, throttled) answer with the API's JSON error envelope.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct
from pydantic import BaseModel

from maas_api.constants import JSON
from maas_api.routes import RouteSpec, model_routes, shared_routes

from .nag import acknowledge

STAGE = "prod"


@dataclass(frozen=True)
class ModelApiProps:
    """Throttling, quota and log retention; every field has its default here and nowhere else."""

    rate_limit: float = 50
    """Steady requests per second, per stage and per API key."""
    burst_limit: int = 100
    """Requests allowed at once above the steady rate."""
    quota_per_day: int = 100_000
    """Requests per API key per day."""
    log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH
    """How long access logs are kept."""


def _error_template(code: str, message: str) -> dict:
    body = (
        '{"error": {"code": "' + code + '", "message": ' + message + ', '
        '"request_id": "$context.requestId"}, "message": $context.error.messageString}'
    )
    return {JSON: body}


_JSON_TYPES = {
    "array": apigw.JsonSchemaType.ARRAY,
    "boolean": apigw.JsonSchemaType.BOOLEAN,
    "integer": apigw.JsonSchemaType.INTEGER,
    "null": apigw.JsonSchemaType.NULL,
    "number": apigw.JsonSchemaType.NUMBER,
    "object": apigw.JsonSchemaType.OBJECT,
    "string": apigw.JsonSchemaType.STRING,
}


def gateway_schema(model: type[BaseModel]) -> apigw.JsonSchema:
    """A shallow draft-4 copy of a request model for API Gateway's validator.

    Required fields, each field's JSON type(s), minItems and minLength: enough to turn away a
    body that is not the right shape before a function is billed. The function validates the
    whole model, with messages that name the problem.
    """
    schema = model.model_json_schema()
    properties = {}
    for name, prop in schema["properties"].items():
        types = [_JSON_TYPES[variant["type"]] for variant in prop.get("anyOf", [prop]) if "type" in variant]
        properties[name] = apigw.JsonSchema(
            type=(types[0] if len(types) == 1 else types) or None,
            min_items=prop.get("minItems"),
            min_length=prop.get("minLength"),
        )
    return apigw.JsonSchema(
        schema=apigw.JsonSchemaVersion.DRAFT4,
        title=schema["title"],
        type=apigw.JsonSchemaType.OBJECT,
        required=schema.get("required"),
        properties=properties,
    )


class ModelApi(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: ModelApiProps = ModelApiProps()) -> None:
        super().__init__(scope, construct_id)
        self.props = props
        self.access_logs = logs.LogGroup(
            self, "AccessLogs", retention=props.log_retention, removal_policy=RemovalPolicy.DESTROY
        )
        self.api = apigw.RestApi(
            self,
            "Api",
            description="maas: models behind one API (routes per model, API key required)",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.DESTROY,
            deploy_options=apigw.StageOptions(
                stage_name=STAGE,
                tracing_enabled=True,
                metrics_enabled=True,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # request bodies (user data) stay out of the logs
                throttling_rate_limit=props.rate_limit,
                throttling_burst_limit=props.burst_limit,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=False, http_method=True, ip=True, protocol=True, request_time=True,
                    resource_path=True, response_length=True, status=True, user=False,
                ),
            ),
            default_method_options=apigw.MethodOptions(api_key_required=True),
        )
        self.body_validator = self.api.add_request_validator(
            "BodyValidator", validate_request_body=True, validate_request_parameters=True
        )
        self.request_models: dict[type, apigw.Model] = {}
        for response_type, status, code, message in (
            (apigw.ResponseType.MISSING_AUTHENTICATION_TOKEN, "404", "not_found", '"no such route: $context.httpMethod $context.path"'),
            (apigw.ResponseType.INVALID_API_KEY, "403", "forbidden", '"a valid x-api-key header is required"'),
            (apigw.ResponseType.BAD_REQUEST_BODY, "422", "validation_error", '"$context.error.validationErrorString"'),
            (apigw.ResponseType.THROTTLED, "429", "throttled", '"too many requests; retry with backoff"'),
            (apigw.ResponseType.QUOTA_EXCEEDED, "429", "quota_exceeded", '"the API key\'s quota is used up"'),
            (apigw.ResponseType.DEFAULT_5_XX, None, "gateway_error", "$context.error.messageString"),
        ):
            self.api.add_gateway_response(
                f"{code.title().replace('_', '')}Response",
                type=response_type,
                status_code=status,
                templates=_error_template(code, message),
            )
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
        acknowledge(
            self.api, "AwsSolutions-IAM4",
            "API Gateway's account-level CloudWatch role uses AWS's managed AmazonAPIGatewayPushToCloudWatchLogs, the "
            "policy AWS documents for it.",
            findings=("Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs",),
        )

    def add_model_routes(self, name: str, task: str, target: lambda_.IFunction) -> None:
        """The model routes a model of this task has (/models/<name>, /models/<name>/invoke, ...), to its function."""
        for spec in model_routes(task):
            self._add(spec, spec.render(name=name), target)

    def add_shared_routes(self, target: lambda_.IFunction) -> None:
        """The shared routes (GET /models, /health, /openapi.json, POST /v1/embeddings), to the default function."""
        for spec in shared_routes():
            self._add(spec, spec.path, target)

    def _add(self, spec: RouteSpec, path: str, target: lambda_.IFunction) -> apigw.Method:
        options = {}
        if spec.request is not None:
            options = dict(
                request_validator=self.body_validator,
                request_models={JSON: self._request_model(spec.request)},
            )
        resource = self.api.root.resource_for_path(path)
        return resource.add_method(spec.method, apigw.LambdaIntegration(target, proxy=True), **options)

    def _request_model(self, request: type[BaseModel]) -> apigw.Model:
        """One API Gateway model per request model, made on first use."""
        if request not in self.request_models:
            name = request.__name__
            self.request_models[request] = self.api.add_model(
                name, content_type=JSON, model_name=name, schema=gateway_schema(request)
            )
        return self.request_models[request]

    @property
    def url(self) -> str:
        return self.api.url
