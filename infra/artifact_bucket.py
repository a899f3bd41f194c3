"""ArtifactBucket: the private bucket for model artifacts kept in S3 (manifest `lambda.artifact = "s3"`).

Encryption is SSE-S3 (S3-managed AES-256) rather than KMS: every cold start of every function
reads the artifact, and with a customer key each read is also a KMS Decrypt call (per-request
cost, KMS request quotas shared with the account, one more grant per function) for no gain in
who can read: access is already limited by the bucket policy and each function's grant on its
own prefix. Versioned (a rollback finds the previous object), public access blocked, TLS
enforced by the bucket policy, server access logs to a second bucket.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from constructs import Construct

from .nag import acknowledge


class ArtifactBucket(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, removal_policy: RemovalPolicy = RemovalPolicy.RETAIN):
        super().__init__(scope, construct_id)
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(365))],
            removal_policy=removal_policy,
        )
        acknowledge(self.access_logs, "AwsSolutions-S1",
                    "This is the server access log bucket itself; logging it to itself would loop.")
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="artifacts/",
            lifecycle_rules=[s3.LifecycleRule(noncurrent_version_expiration=Duration.days(90))],
            removal_policy=removal_policy,
        )

    def prefix_for(self, name: str, version: str) -> str:
        return f"models/{name}/{version}/"
