"""ArtifactBucket: the private bucket for model artifacts kept in S3 (manifest `lambda.artifact = "s3"`).

The artifacts are the owner's intellectual property, so they are encrypted (SSE-KMS) under a
customer-managed key created here (rotated yearly) whose key policy, not IAM, says who may decrypt:
only the roles that read artifacts (`grant_read`: each model function, a SageMaker role) and the
deployment handler that writes them, each only through S3 in this account. The account root keeps
the key's administration (so IAM admins and CloudFormation can manage it, audibly in CloudTrail)
but not its use: a role with `kms:Decrypt` on `*` in its IAM policy still cannot read a model.
S3 Bucket Keys are on, so S3 asks KMS for a bucket-level data key about once per reader and not on
every GetObject (cost and KMS request quotas stay small).

The key policy names no bucket ARN: the key is made before the bucket that uses it, and a condition
on the bucket's ARN would make each depend on the other (CloudFormation refuses the cycle). The key
serves this bucket only, and every statement requires kms:ViaService = S3 and this account.

`encryption = "s3"` (ArtifactBucketProps) keeps S3-managed keys (SSE-S3) instead: no key to pay for
($1 a month) or administer, anyone the bucket policy and IAM let read can read.

Versioned (a rollback finds the previous object), public access blocked, TLS enforced by the bucket
policy, server access logs to a second bucket (SSE-S3: S3 log delivery cannot write SSE-KMS).

`upload(name, version, folder)` copies a built artifact under models/<name>/<version>/ at deploy
time; `grant_read(grantee, name, version)` lets a function read that prefix and nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
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
    encryption: str = "kms"
    """"kms": SSE-KMS under a customer-managed key whose policy names its readers; "s3": SSE-S3."""


KEY_ADMINISTRATION = (
    "kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*", "kms:Revoke*",
    "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:TagResource", "kms:UntagResource",
    "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion",
)
"""What the account (its IAM administrators, CloudFormation) may do with the key: manage it, not use it."""
READ_ACTIONS = ("kms:Decrypt",)
WRITE_ACTIONS = ("kms:GenerateDataKey*", "kms:Encrypt", "kms:Decrypt")
"""The deployment handler writes objects (a data key per object or multipart upload) and reads them back."""


class ArtifactBucket(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: ArtifactBucketProps = ArtifactBucketProps()):
        super().__init__(scope, construct_id)
        if props.encryption not in ("kms", "s3"):
            raise ValueError(f"ArtifactBucketProps.encryption must be 'kms' or 's3', got {props.encryption!r}")
        self.key: kms.Key | None = None
        if props.encryption == "kms":
            # A policy given here replaces CDK's default ("account root: kms:*", which would let IAM
            # grant Decrypt to anyone); the readers are added by grant_read, the writer by upload.
            self.key = kms.Key(
                self, "Key",
                description="maas model artifacts (SSE-KMS): only the roles named in this policy decrypt, through S3",
                enable_key_rotation=True,
                removal_policy=props.removal_policy,
                policy=iam.PolicyDocument(statements=[iam.PolicyStatement(
                    sid="KeyAdministrationOnly", principals=[iam.AccountRootPrincipal()],
                    actions=list(KEY_ADMINISTRATION), resources=["*"],
                )]),
            )
        self._key_users: set[str] = set()
        self.access_logs = self._private_bucket(
            "AccessLogs", props.removal_policy,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(props.access_log_days))],
        )
        acknowledge(self.access_logs, "AwsSolutions-S1",
                    "This is the server access log bucket itself; logging it to itself would loop.")
        encryption = (dict(encryption=s3.BucketEncryption.KMS, encryption_key=self.key, bucket_key_enabled=True)
                      if self.key is not None else {})
        self.bucket = self._private_bucket(
            "Bucket", props.removal_policy,
            **encryption,
            versioned=True,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="artifacts/",
            lifecycle_rules=[
                s3.LifecycleRule(noncurrent_version_expiration=Duration.days(props.noncurrent_version_days)),
            ],
        )

    def _private_bucket(self, construct_id: str, removal_policy: RemovalPolicy, **options) -> s3.Bucket:
        """Encrypted (SSE-S3 unless `options` say otherwise), public access blocked, TLS only."""
        options.setdefault("encryption", s3.BucketEncryption.S3_MANAGED)
        return s3.Bucket(
            self, construct_id,
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
        self.allow_key_use(grantee.grant_principal, READ_ACTIONS)
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
        self.allow_key_use(deployment.handler_role, WRITE_ACTIONS)
        return deployment

    def allow_key_use(self, principal: iam.IPrincipal, actions: tuple[str, ...]) -> None:
        """A key policy statement letting this role use the key through S3 in this account only
        (nothing without the key, SSE-S3). The statement's id names the role; once per role and use."""
        if self.key is None:
            return
        stack = Stack.of(self)
        resource = principal.node.default_child if isinstance(principal, Construct) else None
        name = stack.resolve(stack.get_logical_id(resource)) if resource is not None else str(len(self._key_users))
        sid = ("Decrypt" if actions == READ_ACTIONS else "Write") + "ViaS3" + re.sub(r"[^A-Za-z0-9]", "", str(name))
        if sid in self._key_users:
            return
        self._key_users.add(sid)
        self.key.add_to_resource_policy(iam.PolicyStatement(
            sid=sid, principals=[principal], actions=list(actions), resources=["*"],
            conditions={"StringEquals": {
                "kms:ViaService": f"s3.{stack.region}.amazonaws.com",
                "kms:CallerAccount": stack.account,
            }},
        ))

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
        if self.key is not None:
            acknowledge(
                handler, "AwsSolutions-IAM5",
                "aws-cdk-lib's grant to the BucketDeployment handler on the artifact key (GenerateDataKey*, ReEncrypt*); "
                "the key policy, which names this role, allows it GenerateDataKey*, Encrypt and Decrypt through S3 only.",
                findings=("Action::kms:GenerateDataKey*", "Action::kms:ReEncrypt*"),
            )
