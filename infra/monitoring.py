"""ModelMonitoring: one model's alarms and dashboard.

Alarms: the API's 5xx on the model's invoke route, its p99 latency, the function's throttles and
the function's errors (on the live alias), each notifying the stack's alarm topic. The dashboard
shows the same metrics plus requests, and, for SageMaker models, the endpoint's invocations,
model latency and GPU use.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from constructs import Construct

from maas_api.routes import INVOKE, RouteSpec
from maas_api.routes import route as find_route

from .model_api import STAGE


@dataclass(frozen=True)
class ModelMonitoringProps:
    model_name: str
    api: apigw.RestApi
    alias: lambda_.IFunction
    """The model function's alias, whose errors, throttles and duration are watched."""
    alarm_topic: sns.ITopic
    """Where every alarm notifies."""
    route: RouteSpec = find_route(INVOKE)
    """The model route whose API Gateway metrics are watched."""
    endpoint_name: str | None = None
    """A heavy model's SageMaker endpoint: its metrics join the dashboard."""
    p99_latency_ms: float = 3000
    """Alarm when the route's p99 latency over 5 minutes reaches this."""
    five_xx_per_5_minutes: float = 5
    """Alarm when the route answers this many 5xx in 5 minutes."""
    throttles_per_5_minutes: float = 1
    """Alarm on this many Lambda throttles in 5 minutes."""
    errors_per_5_minutes: float = 5
    """Alarm on this many function errors in 5 minutes."""


class ModelMonitoring(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: ModelMonitoringProps) -> None:
        super().__init__(scope, construct_id)
        model_name, alias, endpoint_name = props.model_name, props.alias, props.endpoint_name
        method, route = props.route.method, props.route.render(name=model_name)
        period = Duration.minutes(5)
        dimensions = {"ApiName": props.api.rest_api_name, "Stage": STAGE, "Method": method, "Resource": route}

        def api_metric(name: str, statistic: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(
                namespace="AWS/ApiGateway", metric_name=name, dimensions_map=dimensions,
                statistic=statistic, period=period,
            )

        self.five_xx = api_metric("5XXError", "Sum")
        self.latency_p99 = api_metric("Latency", "p99")
        self.requests = api_metric("Count", "Sum")
        self.throttles = alias.metric_throttles(period=period, statistic="Sum")
        self.errors = alias.metric_errors(period=period, statistic="Sum")

        notify = cloudwatch_actions.SnsAction(props.alarm_topic)

        def alarm(alarm_id: str, metric, threshold: float, what: str) -> cloudwatch.Alarm:
            created = cloudwatch.Alarm(
                self, alarm_id, metric=metric, threshold=threshold, evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                alarm_description=f"{model_name}: {what}",
            )
            created.add_alarm_action(notify)
            return created

        self.alarms = {
            "5xx": alarm("FiveXxAlarm", self.five_xx, props.five_xx_per_5_minutes, f"5xx answers on {method} {route}"),
            "p99_latency": alarm("LatencyP99Alarm", self.latency_p99, props.p99_latency_ms,
                                 f"p99 latency of {method} {route} (ms)"),
            "throttles": alarm("ThrottlesAlarm", self.throttles, props.throttles_per_5_minutes, "Lambda throttles"),
            "errors": alarm("ErrorsAlarm", self.errors, props.errors_per_5_minutes, "function errors"),
        }
        widgets = [
            cloudwatch.GraphWidget(title=f"{model_name}: requests and 5xx", left=[self.requests], right=[self.five_xx], width=12),
            cloudwatch.GraphWidget(title=f"{model_name}: p99 latency (ms)", left=[self.latency_p99], width=12),
            cloudwatch.GraphWidget(title=f"{model_name}: function errors and throttles", left=[self.errors, self.throttles], width=12),
            cloudwatch.GraphWidget(
                title=f"{model_name}: function duration p50/p99",
                left=[alias.metric_duration(period=period, statistic="p50"), alias.metric_duration(period=period, statistic="p99")],
                width=12,
            ),
        ]
        if endpoint_name is not None:
            def sm(name: str, statistic: str, namespace: str = "AWS/SageMaker") -> cloudwatch.Metric:
                return cloudwatch.Metric(
                    namespace=namespace, metric_name=name, statistic=statistic, period=period,
                    dimensions_map={"EndpointName": endpoint_name, "VariantName": "AllTraffic"},
                )

            widgets += [
                cloudwatch.GraphWidget(title=f"{model_name}: endpoint invocations and errors",
                                       left=[sm("Invocations", "Sum")], right=[sm("Invocation5XXErrors", "Sum")], width=12),
                cloudwatch.GraphWidget(title=f"{model_name}: endpoint model latency p99 (us)",
                                       left=[sm("ModelLatency", "p99")], right=[sm("GPUUtilization", "Average", "/aws/sagemaker/Endpoints")], width=12),
            ]
        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", widgets=[widgets[i:i + 2] for i in range(0, len(widgets), 2)])
