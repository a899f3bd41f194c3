"""ModelApi: one API Gateway REST API in front of every model's function.

Routes (each model's literal resources go to that model's own function alias):

    GET  /models/{name}               GET  /models          -> the default function
    POST /models/{name}/invoke        POST /v1/embeddings   -> the default function
    POST /models/{name}/v1/embeddings GET  /health, GET /openapi.json -> the default function

(`/models/{name}/v1/embeddings` exists for embedding models only.) Every method needs an API key
(x-api-key), bound to a usage plan with throttling and a quota. POST bodies are validated against
a JSON-schema model before any function runs; the stage (`prod`) has access logs in JSON to a log
group with retention, X-Ray tracing, per-method metrics and ERROR execution logs. Gateway errors
(unknown route, bad key, invalid body, throttled) answer with the API's JSON error envelope.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from .nag import acknowledge

STAGE = "prod"


@dataclass(frozen=True)
class ApiSettings:
    rate_limit: float = 50
    burst_limit: int = 100
    quota_per_day: int = 100_000
    log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH


def _error_template(code: str, message: str) -> dict:
    body = (
        '{"error": {"code": "' + code + '", "message": ' + message + ', '
        '"request_id": "$context.requestId"}, "message": $context.error.messageString}'
    )
    return {"application/json": body}


_SCHEMA_INVOKE = apigw.JsonSchema(
    schema=apigw.JsonSchemaVersion.DRAFT4,
    title="InvokeRequest",
    type=apigw.JsonSchemaType.OBJECT,
    required=["inputs"],
    properties={
        "inputs": apigw.JsonSchema(type=apigw.JsonSchemaType.ARRAY, min_items=1),
        "parameters": apigw.JsonSchema(type=apigw.JsonSchemaType.OBJECT),
    },
)
_SCHEMA_EMBEDDINGS = apigw.JsonSchema(
    schema=apigw.JsonSchemaVersion.DRAFT4,
    title="EmbeddingsRequest",
    type=apigw.JsonSchemaType.OBJECT,
    required=["model", "input"],
    properties={
        "model": apigw.JsonSchema(type=apigw.JsonSchemaType.STRING, min_length=1),
        "input": apigw.JsonSchema(type=[apigw.JsonSchemaType.STRING, apigw.JsonSchemaType.ARRAY]),
    },
)


class ModelApi(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, settings: ApiSettings = ApiSettings()) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = logs.LogGroup(
            self, "AccessLogs", retention=settings.log_retention, removal_policy=RemovalPolicy.DESTROY
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
                throttling_rate_limit=settings.rate_limit,
                throttling_burst_limit=settings.burst_limit,
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
        self.invoke_model = self.api.add_model(
            "InvokeRequest", content_type="application/json", model_name="InvokeRequest", schema=_SCHEMA_INVOKE
        )
        self.embeddings_model = self.api.add_model(
            "EmbeddingsRequest", content_type="application/json", model_name="EmbeddingsRequest", schema=_SCHEMA_EMBEDDINGS
        )
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
            throttle=apigw.ThrottleSettings(rate_limit=settings.rate_limit, burst_limit=settings.burst_limit),
            quota=apigw.QuotaSettings(limit=settings.quota_per_day, period=apigw.Period.DAY),
            api_stages=[apigw.UsagePlanPerApiStage(api=self.api, stage=self.api.deployment_stage)],
        )
        self.usage_plan.add_api_key(self.api_key)
        self._models = self.api.root.add_resource("models")
        self.routes: dict[str, str] = {}

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

    def _method(self, resource: apigw.IResource, http_method: str, target: lambda_.IFunction, model=None):
        options = {}
        if model is not None:
            options = dict(request_validator=self.body_validator, request_models={"application/json": model})
        return resource.add_method(http_method, apigw.LambdaIntegration(target, proxy=True), **options)

    def add_model_routes(self, name: str, target: lambda_.IFunction, *, embeddings: bool) -> None:
        """/models/<name> (GET), /models/<name>/invoke (POST) and, for embedding models, /models/<name>/v1/embeddings."""
        resource = self._models.add_resource(name)
        self._method(resource, "GET", target)
        self._method(resource.add_resource("invoke"), "POST", target, self.invoke_model)
        if embeddings:
            self._method(resource.add_resource("v1").add_resource("embeddings"), "POST", target, self.embeddings_model)
        self.routes[name] = f"/models/{name}/invoke"

    def add_shared_routes(self, target: lambda_.IFunction) -> None:
        """GET /models, /health, /openapi.json and POST /v1/embeddings on the default function."""
        self._method(self._models, "GET", target)
        self._method(self.api.root.add_resource("health"), "GET", target)
        self._method(self.api.root.add_resource("openapi.json"), "GET", target)
        self._method(self.api.root.add_resource("v1").add_resource("embeddings"), "POST", target, self.embeddings_model)

    @property
    def url(self) -> str:
        return self.api.url
