"""ArtifactBucket: the private bucket for model artifacts kept in S3 (manifest `lambda.artifact = "s3"`).

Encryption is SSE-S3 (S3-managed AES-256) rather than KMS: every cold start of every function
reads the artifact, and with a customer key each read is also a KMS Decrypt call (per-request
cost, KMS request quotas shared with the account, one more grant per function) for no gain in
who can read: access is already limited by the bucket policy and each function's grant on its
own prefix. Versioned (a rollback finds the previous object), public access blocked, TLS
enforced by the bucket policy, server access logs to a second bucket.

`upload(name, version, folder)` copies a built artifact under models/<name>/<version>/ at deploy
time; `grant_read(grantee, name, version)` lets a function read that prefix and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from constructs import Construct

from .nag import acknowledge

# The id CDK gives the one Lambda function behind every BucketDeployment of a stack.
_DEPLOYMENT_HANDLER_ID = "Custom::CDKBucketDeployment8693BB64968944B69AAFB0CC9EB8756C"


@dataclass(frozen=True)
class ArtifactBucketProps:
    removal_policy: RemovalPolicy = RemovalPolicy.RETAIN
    """What a stack deletion does to both buckets: kept by default, artifacts are the deployment's history."""
    noncurrent_version_days: int = 90
    """How long a replaced artifact object stays restorable."""
    access_log_days: int = 365
    """How long server access logs are kept."""


class ArtifactBucket(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: ArtifactBucketProps = ArtifactBucketProps()):
        super().__init__(scope, construct_id)
        self.access_logs = self._private_bucket(
            "AccessLogs", props.removal_policy,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(props.access_log_days))],
        )
        acknowledge(self.access_logs, "AwsSolutions-S1",
                    "This is the server access log bucket itself; logging it to itself would loop.")
        self.bucket = self._private_bucket(
            "Bucket", props.removal_policy,
            versioned=True,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="artifacts/",
            lifecycle_rules=[
                s3.LifecycleRule(noncurrent_version_expiration=Duration.days(props.noncurrent_version_days)),
            ],
        )

    def _private_bucket(self, construct_id: str, removal_policy: RemovalPolicy, **options) -> s3.Bucket:
        """Encrypted (SSE-S3), public access blocked, TLS only."""
        return s3.Bucket(
            self, construct_id,
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            removal_policy=removal_policy,
            **options,
        )

    def prefix_for(self, name: str, version: str) -> str:
        return f"models/{name}/{version}/"

    def uri_for(self, name: str, version: str) -> str:
        """s3://<bucket>/models/<name>/<version>/ (a token until deployed)."""
        return f"s3://{self.bucket.bucket_name}/{self.prefix_for(name, version)}"

    def grant_read(self, grantee: iam.IGrantable, name: str, version: str) -> iam.Grant:
        """s3:GetObject on this model version's prefix only (the handler fetches card.json and the
        files it lists), and s3:ListBucket limited by an s3:prefix condition to the same prefix.

        The handler never lists; the listing right is what lets S3 tell it "missing": without
        s3:ListBucket, S3 answers AccessDenied for a key that does not exist, and a missing
        artifact would be reported as a permissions problem.
        """
        prefix = self.prefix_for(name, version)
        grant = iam.Grant.add_to_principal(
            grantee=grantee, actions=["s3:GetObject"], resource_arns=[self.bucket.arn_for_objects(f"{prefix}*")]
        )
        iam.Grant.add_to_principal(
            grantee=grantee, actions=["s3:ListBucket"], resource_arns=[self.bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{prefix}*"]}},
        )
        bucket_id = Stack.of(self).get_logical_id(self.bucket.node.default_child)
        scope = grantee.grant_principal if isinstance(grantee.grant_principal, Construct) else grantee
        acknowledge(
            scope, "AwsSolutions-IAM5",
            "Read-only access to the objects under this model's own prefix; the file names come from its card.json.",
            findings=(f"Resource::<{bucket_id}.Arn>/{prefix}*",),
        )
        return grant

    def upload(self, name: str, version: str, folder: Path) -> s3deploy.BucketDeployment:
        """Copy a built artifact folder under the model version's prefix at deploy time (once per
        version: the live function and that version's own function read the same objects)."""
        existing = self.node.try_find_child(f"Upload-{name}-{version}")
        if existing is not None:
            return existing
        deployment = s3deploy.BucketDeployment(
            self, f"Upload-{name}-{version}",
            sources=[s3deploy.Source.asset(str(folder))],
            destination_bucket=self.bucket,
            destination_key_prefix=self.prefix_for(name, version),
            prune=False,  # earlier versions' prefixes stay for rollbacks
            retain_on_delete=True,
        )
        self._acknowledge_deployment_handler(deployment)
        return deployment

    def _acknowledge_deployment_handler(self, deployment: s3deploy.BucketDeployment) -> None:
        handler = Stack.of(self).node.try_find_child(_DEPLOYMENT_HANDLER_ID) or deployment
        bucket_id = Stack.of(self).get_logical_id(self.bucket.node.default_child)
        acknowledge(
            handler, "AwsSolutions-IAM5",
            "CDK's BucketDeployment handler copies the artifact once per deploy: it reads the CDK asset from the "
            "bootstrap staging bucket and writes (and replaces) objects in the artifact bucket; aws-cdk-lib writes "
            "this policy.",
            findings=(
                "Action::s3:GetObject*", "Action::s3:GetBucket*", "Action::s3:List*", "Action::s3:DeleteObject*",
                "Action::s3:Abort*", f"Resource::<{bucket_id}.Arn>/*",
                "Resource::arn:<AWS::Partition>:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-<AWS::Region>/*",
            ),
        )
        acknowledge(
            handler, "AwsSolutions-IAM4",
            "CDK's BucketDeployment handler uses AWSLambdaBasicExecutionRole (aws-cdk-lib's choice).",
            findings=("Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",),
        )
        acknowledge(handler, "AwsSolutions-L1", "CDK's BucketDeployment handler runtime is chosen by aws-cdk-lib.")
