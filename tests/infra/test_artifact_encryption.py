"""The artifact bucket under a customer-managed KMS key: SSE-KMS with a Bucket Key, rotation on,
and a key policy that lets only the functions reading artifacts (and the deployment handler
writing them) use the key, through S3 in this account; the account keeps administration only.

Synthesized from the shipped manifest changed to keep digits' artifacts in S3 (the `variant`
fixture: digits' two versions read from S3, minilm and minilm-gpu on SageMaker)."""

from __future__ import annotations

import json

from aws_cdk.assertions import Match, Template

USE = {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*", "kms:*", "kms:GenerateDataKey"}


def _as_list(value):
    return value if isinstance(value, list) else [value]


def _artifact_keys(synth) -> dict:
    """The artifact bucket's key (the alarm topic has a key of its own)."""
    return {lid: k for lid, k in synth.of_type("AWS::KMS::Key").items() if lid.startswith("ArtifactsKey")}


def _key(synth) -> tuple[str, dict]:
    (key_id, key), = _artifact_keys(synth).items()
    return key_id, key


def test_the_bucket_uses_sse_kms_with_a_rotated_customer_key(variant):
    key_id, key = _key(variant)
    assert key["Properties"]["EnableKeyRotation"] is True
    Template.from_json(variant.template).has_resource_properties("AWS::S3::Bucket", {
        "BucketEncryption": {"ServerSideEncryptionConfiguration": [{
            "BucketKeyEnabled": True,
            "ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": {"Fn::GetAtt": [key_id, "Arn"]}},
        }]},
        "VersioningConfiguration": {"Status": "Enabled"},
    })


def test_the_key_policy_names_exactly_the_roles_that_read_and_write_artifacts(variant):
    _, key = _key(variant)
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    functions = variant.of_type("AWS::Lambda::Function")
    # the roles of the functions that fetch an artifact from S3 (digits' live function and each kept version's)
    readers = {f["Properties"]["Role"]["Fn::GetAtt"][0] for f in functions.values()
               if "MAAS_MODEL_S3_URI" in f["Properties"].get("Environment", {}).get("Variables", {})}
    assert len(readers) == 3
    # the one handler behind every BucketDeployment
    (writer,) = {f["Properties"]["Role"]["Fn::GetAtt"][0] for lid, f in functions.items() if "CDKBucketDeployment" in lid}

    used = {}
    for statement in statements:
        actions = set(_as_list(statement["Action"]))
        principal = statement["Principal"]["AWS"]
        if actions & USE:
            # every use of the key is by a named role, through S3, in this account
            assert statement["Effect"] == "Allow" and "Fn::GetAtt" in principal, statement
            assert statement["Condition"]["StringEquals"]["kms:ViaService"] == {"Fn::Join": ["", ["s3.", {"Ref": "AWS::Region"}, ".amazonaws.com"]]}
            assert statement["Condition"]["StringEquals"]["kms:CallerAccount"] == {"Ref": "AWS::AccountId"}
            used[principal["Fn::GetAtt"][0]] = actions
        else:
            # the account root administers the key (IAM admins, CloudFormation) but cannot use it
            assert "root" in json.dumps(principal) and "kms:Put*" in actions and "kms:ScheduleKeyDeletion" in actions
    assert set(used) == readers | {writer}
    assert all(used[r] == {"kms:Decrypt"} for r in readers)
    assert used[writer] == {"kms:GenerateDataKey*", "kms:Encrypt", "kms:Decrypt"}
    # and no IAM policy elsewhere opens the key to anyone else (the key policy alone decides)
    heavy_roles = {lid for lid, r in variant.of_type("AWS::IAM::Role").items()
                   if "sagemaker.amazonaws.com" in json.dumps(r["Properties"]["AssumeRolePolicyDocument"])}
    assert heavy_roles and not heavy_roles & set(used)


def test_the_shipped_manifest_keeps_no_artifact_in_s3_and_so_no_key(synth):
    # nothing reads S3 there: no bucket, no key to pay for
    assert not _artifact_keys(synth)
    assert not [f for f in synth.of_type("AWS::Lambda::Function").values()
                if "MAAS_MODEL_S3_URI" in json.dumps(f["Properties"].get("Environment", {}))]


def test_sse_s3_stays_available():
    from aws_cdk import App, Stack

    from infra.artifact_bucket import ArtifactBucket, ArtifactBucketProps

    stack = Stack(App(), "Plain")
    ArtifactBucket(stack, "Artifacts", ArtifactBucketProps(encryption="s3"))
    template = Template.from_stack(stack)
    template.resource_count_is("AWS::KMS::Key", 0)
    template.has_resource_properties("AWS::S3::Bucket", {"BucketEncryption": {"ServerSideEncryptionConfiguration": [
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}, "VersioningConfiguration": Match.any_value()})
