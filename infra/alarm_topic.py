"""AlarmTopic: where every model's alarms go.

An SNS topic encrypted with a customer-managed KMS key: CloudWatch alarms cannot publish to
a topic under the AWS-managed `alias/aws/sns` key, so the key's policy lets CloudWatch use it
(and nothing else). The topic's policy (which replaces SNS's default one, and refuses plain
HTTP) allows CloudWatch to publish, for alarms of this account and region only: without that
statement every alarm action fails with "not authorized to perform SNS:Publish". Subscribe your
on-call to the `AlarmTopicArn` output, or pass an address with the context key `maas:alarmEmail`.
Cost: the key is about $1 a month.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct


@dataclass(frozen=True)
class AlarmTopicProps:
    email: str | None = None
    """An address subscribed to the topic; None subscribes nobody (use the AlarmTopicArn output)."""
    display_name: str = "maas alarms"
    """The sender name of the notifications."""


class AlarmTopic(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: AlarmTopicProps = AlarmTopicProps()) -> None:
        super().__init__(scope, construct_id)
        cloudwatch = iam.ServicePrincipal("cloudwatch.amazonaws.com")
        self.key = kms.Key(self, "Key", enable_key_rotation=True, description="maas alarm topic encryption")
        self.key.grant(cloudwatch, "kms:Decrypt", "kms:GenerateDataKey*")
        self.topic = sns.Topic(self, "Topic", master_key=self.key, enforce_ssl=True, display_name=props.display_name)
        stack = Stack.of(self)
        self.topic.add_to_resource_policy(iam.PolicyStatement(
            sid="AllowCloudWatchAlarmsToPublish",
            principals=[cloudwatch],
            actions=["sns:Publish"],
            resources=[self.topic.topic_arn],
            conditions={
                "StringEquals": {"aws:SourceAccount": stack.account},
                "ArnLike": {"aws:SourceArn": stack.format_arn(
                    service="cloudwatch", resource="alarm", resource_name="*", arn_format=ArnFormat.COLON_RESOURCE_NAME,
                )},
            },
        ))
        if props.email:
            self.topic.add_subscription(subscriptions.EmailSubscription(props.email))
