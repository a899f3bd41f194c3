"""ArtifactBucket.grant_read: a function reads its own model prefix, and may list only that prefix,
so that S3 tells it "missing" (NoSuchKey) rather than AccessDenied for an absent object."""

from __future__ import annotations

import json

import pytest


def _policy_statements(template: dict) -> list[dict]:
    return [s for r in template["Resources"].values() if r["Type"] == "AWS::IAM::Policy"
            for s in r["Properties"]["PolicyDocument"]["Statement"]]


def _actions(statement: dict) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def test_grant_read_gives_the_objects_and_a_listing_of_the_models_prefix_only():
    pytest.importorskip("aws_cdk")
    from aws_cdk import App, Stack
    from aws_cdk import aws_iam as iam
    from aws_cdk.assertions import Template

    from infra.artifact_bucket import ArtifactBucket

    # GIVEN a function role granted read on one model version
    stack = Stack(App(), "Bucket")
    bucket = ArtifactBucket(stack, "Artifacts")
    role = iam.Role(stack, "Fn", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    bucket.grant_read(role, "digits", "1.0.0")
    # WHEN the stack is synthesized
    template = Template.from_stack(stack).to_json()
    statements = _policy_statements(template)
    # THEN it may get objects under models/digits/1.0.0/ ...
    reads = [s for s in statements if "s3:GetObject" in _actions(s)]
    assert len(reads) == 1 and _actions(reads[0]) == ["s3:GetObject"]
    assert "models/digits/1.0.0/*" in json.dumps(reads[0]["Resource"])
    # ... and list the bucket, only under that prefix (without it S3 answers AccessDenied for a
    # missing key, and the handler could not tell a missing artifact from a denied one)
    lists = [s for s in statements if "s3:ListBucket" in _actions(s)]
    assert len(lists) == 1 and _actions(lists[0]) == ["s3:ListBucket"]
    assert lists[0]["Condition"] == {"StringLike": {"s3:prefix": ["models/digits/1.0.0/*"]}}
    assert "/*" not in json.dumps(lists[0]["Resource"])  # the bucket itself, not its objects
