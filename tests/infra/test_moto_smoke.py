"""Smoke test: moto's CloudFormation (ThreadedMotoServer on 127.0.0.1) creates the synthesized stack.

moto needs the CDK bootstrap version parameter and the file assets in the staging bucket; it rejects
ml.g5 instance types, so this test (only) swaps the instance type for one moto accepts; it has no
AWS::Lambda::Alias, so the API's invoke permissions on the `live` aliases are left out here; and its
Ref of an AWS::Lambda::Version is not the version's ARN (as CloudFormation's is) but an object it
cannot serialize, so the pre-traffic hooks' references to the new version get a placeholder ARN.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import boto3
import pytest

ACCOUNT, REGION = "123456789012", "us-east-1"
STAGING_BUCKET = f"cdk-hnb659fds-assets-{ACCOUNT}-{REGION}"
MOTO_INSTANCE_TYPE = "ml.m5.xlarge"


def _zip(folder: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as archive:  # stored: fast, moto only keeps the bytes
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return dest


@pytest.fixture(scope="module")
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_moto_creates_the_synthesized_stack(synth, moto_endpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")

    def client(service):
        return boto3.client(service, region_name=REGION, endpoint_url=moto_endpoint)

    # GIVEN what `cdk bootstrap` and the asset publishing step would have left in the account
    client("ssm").put_parameter(Name="/cdk-bootstrap/hnb659fds/version", Value="30", Type="String")
    s3 = client("s3")
    s3.create_bucket(Bucket=STAGING_BUCKET)
    manifest = json.loads((synth.outdir / f"{synth.stack.stack_name}.assets.json").read_text())
    for digest, entry in manifest["files"].items():
        source = synth.outdir / entry["source"]["path"]
        key = next(iter(entry["destinations"].values()))["objectKey"]
        body = _zip(source, tmp_path / f"{digest}.zip") if entry["source"].get("packaging") == "zip" else source
        s3.upload_file(str(body), STAGING_BUCKET, key)
    body = json.loads(json.dumps(synth.template).replace("ml.g5.xlarge", MOTO_INSTANCE_TYPE))
    # moto's CloudFormation has no AWS::Lambda::Alias, so permissions naming an alias cannot resolve: drop them here.
    aliases = {k for k, r in body["Resources"].items() if r["Type"] == "AWS::Lambda::Alias"}
    for lid in [k for k, r in body["Resources"].items()
                if r["Type"] == "AWS::Lambda::Permission" and json.dumps(r["Properties"]["FunctionName"]).strip('"{}').split('"')[-1] in aliases]:
        del body["Resources"][lid]
    versions = {k for k, r in body["Resources"].items() if r["Type"] == "AWS::Lambda::Version"}
    template = json.dumps(body)
    for lid in versions:
        template = template.replace(json.dumps({"Ref": lid}), json.dumps(f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{lid}:1"))
    s3.put_object(Bucket=STAGING_BUCKET, Key="template.json", Body=template.encode())

    # WHEN CloudFormation creates the stack
    cfn = client("cloudformation")
    cfn.create_stack(
        StackName=synth.stack.stack_name,
        TemplateURL=f"https://s3.amazonaws.com/{STAGING_BUCKET}/template.json",
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    stack = cfn.describe_stacks(StackName=synth.stack.stack_name)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")

    # THEN the functions, the API's methods and the endpoint exist
    functions = client("lambda").list_functions()["Functions"]
    names = sorted(f["Environment"]["Variables"]["MAAS_MODEL_NAME"] for f in functions if "MAAS_MODEL_NAME" in f.get("Environment", {}).get("Variables", {}))
    assert names == sorted([m.name for m in synth.stack.models.values()] + [n for n, _ in synth.stack.versions])
    names = sorted(set(names))
    apigw = client("apigateway")
    api = next(a for a in apigw.get_rest_apis()["items"])
    methods = {(m, r["path"]) for r in apigw.get_resources(restApiId=api["id"], embed=["methods"])["items"]
               for m in (r.get("resourceMethods") or {})}
    for name in names:
        assert ("POST", f"/models/{name}/invoke") in methods
    assert ("GET", "/models") in methods and ("POST", "/v1/embeddings") in methods
    endpoints = client("sagemaker").list_endpoints()["Endpoints"]
    assert len(endpoints) == len([m for m in synth.stack.models.values() if m.target == "sagemaker"])
