"""`maas serve --template cdk.out`: the local API driven by the synthesized cloud assembly.

Where `maas serve` builds its routes from the manifest, this reads what `cdk deploy` would
upload: the stack template's API Gateway methods give the routes, each method's Lambda
integration names the function (or alias), and each function runs from its own staged asset
(cdk.out/asset.<hash>/) with its layers' code on the import path and its environment from the
template, in a separate ``python -I -S`` process (maas/lambda_worker.py) that sees nothing else.

Native packages in a layer are built for Lambda (aarch64 or x86_64, cp312); they are swapped for
this machine's build of the same versions (maas.layers, same spec, cached), while the layer's pure
Python code (maas_runtime, maas_api, Powertools) is the asset's own. What the Lambda runtime
provides (boto3 and its dependencies) comes from this environment. A SageMaker endpoint is run
locally from its model data asset (model.tar.gz, a Triton model repository) by the local Triton
or its stand-in (maas.triton.endpoint), and the proxy function is pointed at it. No Docker.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maas_api.constants import (
    ENV_API_KEY,
    ENV_MODEL_NAME,
    ENV_SAGEMAKER_ENDPOINT,
    ENV_SAGEMAKER_INFERENCE_COMPONENT,
    ENV_SAGEMAKER_RUNTIME_URL,
    ENV_TENANT_KEY_IDS,
)

from . import layers as layer_builder
from .local_api import (
    DEFAULT_HOST,
    FUNCTIONS_DIR,
    POWERTOOLS_OFF_LAMBDA,
    FunctionInstance,
    LocalApi,
    LocalStack,
    Route,
    serve_until_interrupted,
)
from .paths import materialize
from .tenants import TenantGate, local_key_id
from .triton.repository import local_repository_from_archive

WORKER = Path(__file__).resolve().parent / "lambda_worker.py"
OVERLAY_DIR = Path(".cache") / "template-serve"
LAMBDA_PROVIDED_MODULES = ("boto3", "botocore", "s3transfer", "urllib3", "dateutil", "six", "jmespath")


class TemplateError(RuntimeError):
    """The cloud assembly cannot be served locally; the message says why."""


# --- reading the cloud assembly ------------------------------------------------------------------


@dataclass
class FunctionDef:
    logical_id: str
    handler: str
    asset: Path
    layers: list[Path]
    environment: dict[str, Any]
    memory_mb: int
    timeout_s: int


@dataclass
class MethodDef:
    http_method: str
    path: str
    function_id: str
    api_key_required: bool


@dataclass
class EndpointDef:
    logical_id: str
    model_data: Path
    """model.tar.gz: a Triton model repository."""
    component_id: str | None = None
    """The inference component serving the model (scale to zero), if any."""

    def local_name(self, logical_id: str | None = None) -> str:
        """The endpoint's (or its component's) name locally, where CloudFormation would name it."""
        return f"local-{logical_id or self.logical_id}"


@dataclass
class Assembly:
    stack: str
    template: dict
    functions: dict[str, FunctionDef] = field(default_factory=dict)
    methods: list[MethodDef] = field(default_factory=list)
    endpoints: dict[str, EndpointDef] = field(default_factory=dict)


def _stack_artifact(cdk_out: Path, stack: str | None) -> tuple[str, Path, Path | None]:
    manifest = json.loads((cdk_out / "manifest.json").read_text())
    stacks = {k: v for k, v in manifest["artifacts"].items() if v.get("type") == "aws:cloudformation:stack"}
    if not stacks:
        raise TemplateError(f"{cdk_out} holds no CloudFormation stack (run `npx cdk synth` first)")
    if stack is None:
        if len(stacks) > 1:
            raise TemplateError(f"{cdk_out} holds several stacks ({', '.join(stacks)}); pass one")
        stack = next(iter(stacks))
    if stack not in stacks:
        raise TemplateError(f"no stack {stack!r} in {cdk_out} (it has {', '.join(stacks)})")
    template = cdk_out / stacks[stack]["properties"]["templateFile"]
    assets = next(
        (cdk_out / v["properties"]["file"] for k, v in manifest["artifacts"].items()
         if v.get("type") == "cdk:asset-manifest" and k == f"{stack}.assets"),
        None,
    )
    return stack, template, assets


def _asset_paths(cdk_out: Path, assets_file: Path | None) -> dict[str, Path]:
    """S3 object key (<hash>.zip, <hash>.tar.gz) -> the staged file or folder in cdk.out."""
    found: dict[str, Path] = {}
    if assets_file is None or not assets_file.is_file():
        return found
    for entry in json.loads(assets_file.read_text()).get("files", {}).values():
        source = cdk_out / entry["source"]["path"]
        for destination in entry.get("destinations", {}).values():
            found[destination["objectKey"]] = source
    return found


def _refs(value: Any) -> list[str]:
    """Logical ids referenced (Ref, Fn::GetAtt) anywhere inside a template value."""
    out: list[str] = []
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str):
                out.append(inner)
            elif key == "Fn::GetAtt":
                out.append(inner[0] if isinstance(inner, list) else str(inner).split(".")[0])
            else:
                out += _refs(inner)
    elif isinstance(value, list):
        for inner in value:
            out += _refs(inner)
    return out


def _object_key(code: dict, assets: dict[str, Path], what: str) -> Path:
    key = code.get("S3Key")
    if isinstance(key, str) and key in assets:
        return assets[key]
    raise TemplateError(f"{what}: its code is not a file asset of this assembly ({json.dumps(key)[:80]})")


def load_assembly(cdk_out: str | os.PathLike, stack: str | None = None) -> Assembly:
    cdk_out = Path(cdk_out)
    if not (cdk_out / "manifest.json").is_file():
        raise TemplateError(f"{cdk_out} is not a cloud assembly (no manifest.json): run `npx cdk synth` first")
    stack, template_path, assets_file = _stack_artifact(cdk_out, stack)
    template = json.loads(template_path.read_text())
    assets = _asset_paths(cdk_out, assets_file)
    resources = template.get("Resources", {})
    assembly = Assembly(stack, template)

    layers = {
        lid: _object_key(r["Properties"]["Content"], assets, f"layer {lid}")
        for lid, r in resources.items() if r["Type"] == "AWS::Lambda::LayerVersion"
    }
    for lid, r in resources.items():
        if r["Type"] != "AWS::Lambda::Function":
            continue
        props = r["Properties"]
        try:
            asset = _object_key(props.get("Code", {}), assets, f"function {lid}")
        except TemplateError:
            continue  # CDK's own helper functions (custom resources) are not served
        layer_ids = [ref for layer in props.get("Layers", []) for ref in _refs(layer)]
        assembly.functions[lid] = FunctionDef(
            logical_id=lid,
            handler=props.get("Handler", "app.lambda_handler"),
            asset=asset,
            layers=[layers[i] for i in layer_ids if i in layers],
            environment=(props.get("Environment") or {}).get("Variables", {}),
            memory_mb=int(props.get("MemorySize", 128)),
            timeout_s=int(props.get("Timeout", 3)),
        )

    # Aliases and versions resolve to their function.
    owner: dict[str, str] = {fid: fid for fid in assembly.functions}
    for _ in range(2):
        for lid, r in resources.items():
            if r["Type"] in ("AWS::Lambda::Alias", "AWS::Lambda::Version"):
                for ref in _refs(r["Properties"].get("FunctionName")) + _refs(r["Properties"].get("FunctionVersion")):
                    if ref in owner:
                        owner[lid] = owner[ref]

    def resource_path(resource_ref: Any) -> str:
        refs = _refs(resource_ref)
        if not refs:
            return "/"
        lid = refs[0]
        r = resources.get(lid)
        if r is None or r["Type"] != "AWS::ApiGateway::Resource":
            return "/"  # the RestApi's RootResourceId
        parent = resource_path(r["Properties"]["ParentId"])
        return parent.rstrip("/") + "/" + r["Properties"]["PathPart"]

    for lid, r in resources.items():
        if r["Type"] != "AWS::ApiGateway::Method":
            continue
        props = r["Properties"]
        integration = props.get("Integration") or {}
        if integration.get("Type") != "AWS_PROXY":
            continue
        targets = [owner[ref] for ref in _refs(integration.get("Uri")) if ref in owner]
        if not targets:
            continue
        assembly.methods.append(MethodDef(
            http_method=props["HttpMethod"],
            path=resource_path(props["ResourceId"]),
            function_id=targets[0],
            api_key_required=bool(props.get("ApiKeyRequired")),
        ))

    for lid, r in resources.items():
        if r["Type"] != "AWS::SageMaker::Endpoint":
            continue
        config = resources.get(_refs(r["Properties"]["EndpointConfigName"])[0], {})
        variants = config.get("Properties", {}).get("ProductionVariants", [])
        # The variant runs the model, or (scale to zero) hosts an inference component that names it.
        model_ref, component = (variants[0].get("ModelName") if variants else None), None
        for cid, c in resources.items():
            if c["Type"] == "AWS::SageMaker::InferenceComponent" and lid in _refs(c["Properties"].get("EndpointName")):
                model_ref, component = c["Properties"]["Specification"]["ModelName"], cid
        model = resources.get((_refs(model_ref) or [""])[0], {})
        url = json.dumps(model.get("Properties", {}).get("PrimaryContainer", {}).get("ModelDataUrl"))
        for digest in re.findall(r"[0-9a-f]{64}", url):
            keys = [k for k in assets if k.startswith(digest)]
            if keys:
                assembly.endpoints[lid] = EndpointDef(lid, assets[keys[0]], component)
                break
    return assembly


# --- layers for this machine ---------------------------------------------------------------------


def host_layer_view(layer_asset: Path, shared_root: Path, cache_dir: Path) -> Path:
    """The layer as this machine can import it: the asset's pure code + this machine's native packages.

    A folder holding python/ with one symlink per top-level entry; built once per layer asset.
    """
    report_file = layer_asset / layer_builder.REPORT_FILE
    if not report_file.is_file():
        return layer_asset  # not a maas layer: used as it is
    report = json.loads(report_file.read_text())
    host = layer_builder.host_platform()
    if report["platform"] == "host" or (report["machine"] == host.machine and report["python_version"] == host.python_version):
        return layer_asset
    where = hashlib.sha256(str(layer_asset.resolve()).encode()).hexdigest()[:12]
    view = cache_dir / f"{layer_asset.name[:40]}-{where}-{host.machine}-cp{host.python_version.replace('.', '')}"
    links = view / "python"
    if view.is_dir():
        if links.is_dir() and all(link.exists() for link in links.iterdir()):
            return view
        shutil.rmtree(view)  # an earlier assembly in the same place was replaced
    spec = layer_builder.LAYERS[report["name"]]
    native_built = layer_builder.build_layer(spec, host, shared_root, cache_dir.parent / "layers")
    native = {name: info for name, info in report["kept"].items() if info["native"]}
    for name, info in native.items():
        here = native_built.kept.get(name, {}).get("version")
        if here != info["version"]:
            raise TemplateError(
                f"layer {report['name']}: {name} {info['version']} in the asset but {here} built for this machine"
            )

    def is_native_dist_info(entry: Path) -> bool:
        return entry.name.endswith(".dist-info") and layer_builder._normalize(entry.name.split("-")[0]) in native

    from_asset_skip = {entry for info in native.values() for entry in info["top_level"]}
    from_host = {entry for name in native for entry in native_built.kept[name]["top_level"]}

    def fill(work: Path) -> None:
        content = work / "python"
        content.mkdir()
        for entry in (layer_asset / "python").iterdir():
            if entry.name not in from_asset_skip and not is_native_dist_info(entry):
                os.symlink(entry.resolve(), content / entry.name)
        for entry in native_built.content.iterdir():
            if (entry.name in from_host or is_native_dist_info(entry)) and not (content / entry.name).exists():
                os.symlink(entry.resolve(), content / entry.name)

    return materialize(view, fill)


def lambda_provided_view(cache_dir: Path) -> Path:
    """boto3 and what it needs, from this environment: what the Lambda Python runtime provides."""

    def fill(work: Path) -> None:
        for name in LAMBDA_PROVIDED_MODULES:
            spec = importlib.util.find_spec(name)
            if spec is None or spec.origin is None:
                continue
            origin = Path(spec.origin)
            source = origin.parent if origin.name == "__init__.py" else origin
            os.symlink(source, work / source.name)

    return materialize(cache_dir / "lambda-runtime-provided", fill)


# --- running functions -----------------------------------------------------------------------------


class WorkerFunction:
    """A function running in its own isolated Python process; `invoke` is one Lambda invocation."""

    def __init__(self, name: str, task_root: Path, layers: list[Path], environment: dict[str, str],
                 handler: str = "app.lambda_handler", extra: list[Path] = (), memory_mb: int = 1024, timeout_s: int = 30,
                 python: str | None = None):
        self.name = name
        self.memory_mb = memory_mb
        self.timeout_s = timeout_s
        command = [python or sys.executable, "-I", "-S", "-B", str(WORKER), "--task-root", str(task_root), "--handler", handler]
        for layer in layers:
            command += ["--layer", str(layer)]
        for folder in extra:
            command += ["--extra", str(folder)]
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
            env=environment, text=True, bufsize=1, cwd=str(task_root),
        )
        ready = json.loads(self.process.stdout.readline() or '{"ready": false, "error": "the worker exited"}')
        if not ready.get("ready"):
            self.close()
            raise TemplateError(f"function {name} failed to start:\n{ready.get('error')}")
        self.sys_path = ready["sys_path"]

    def _call(self, request: dict) -> dict:
        with self._lock:
            if self.process.poll() is not None:
                raise RuntimeError(f"function {self.name}'s process has exited")
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"function {self.name}'s process has exited")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"function {self.name} raised:\n{answer['error']}")
        return answer["result"]

    def invoke(self, event: dict, context: Any = None) -> dict:
        ctx = {"function_name": self.name, "memory_mb": self.memory_mb, "timeout_s": self.timeout_s}
        if getattr(context, "aws_request_id", None):
            ctx["aws_request_id"] = context.aws_request_id
        return self._call({"event": event, "context": ctx})

    def module_files(self, names: list[str]) -> dict[str, str | None]:
        return self._call({"modules": list(names)})

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.close()
                self.process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


def base_environment() -> dict[str, str]:
    """What Lambda sets for every function, plus the local defaults `maas serve` uses."""
    env = {k: os.environ[k] for k in ("PATH", "LANG", "TMPDIR", "HOME") if k in os.environ}
    region = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    env.update({
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_LAMBDA_RUNTIME_API": "",
        **POWERTOOLS_OFF_LAMBDA,
        "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "local"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "local"),
    })
    return env


@dataclass
class TemplateStack(LocalStack):
    """A LocalStack whose functions run in worker processes, each from its own asset."""

    functions: dict[str, WorkerFunction] = field(default_factory=dict)
    api_key_required: bool = False
    tenanted: bool = False
    """The template's functions name tenants' API keys: each tenant needs its own key here too."""
    _tmp: list = field(default_factory=list)

    def close(self) -> None:
        for function in self.functions.values():
            function.close()
        super().close()
        for tmp in self._tmp:
            tmp.cleanup()


def template_stack(cdk_out: str | os.PathLike, root: Path, stack: str | None = None) -> TemplateStack:
    """Workers for every function the API's methods reach, and the routes to them."""
    assembly = load_assembly(Path(cdk_out).resolve(), stack)
    root = Path(root).resolve()
    cache_dir = root / OVERLAY_DIR
    cache_dir.mkdir(parents=True, exist_ok=True)
    shared_root = root / "shared"
    result = TemplateStack(routes=[], instances={})
    endpoints: dict[str, str] = {}
    components = {e.component_id: e for e in assembly.endpoints.values() if e.component_id}
    try:
        for lid, endpoint in assembly.endpoints.items():
            tmp = tempfile.TemporaryDirectory(prefix=f"maas-{lid}-")
            result._tmp.append(tmp)
            repository, model = local_repository_from_archive(endpoint.model_data, Path(tmp.name))
            component = endpoint.local_name(endpoint.component_id) if endpoint.component_id else None
            endpoints[lid] = result.start_endpoint(root, repository, model, endpoint.local_name(), component)

        provided = lambda_provided_view(cache_dir)
        used = {m.function_id for m in assembly.methods}
        for fid in sorted(used):
            fdef = assembly.functions[fid]
            env = base_environment()
            for key, value in fdef.environment.items():
                if isinstance(value, str):
                    env[key] = value
                    continue
                refs = [r for r in _refs(value) if r in endpoints]
                component_refs = [r for r in _refs(value) if r in components]
                if key == ENV_SAGEMAKER_ENDPOINT and refs:
                    env[key] = assembly.endpoints[refs[0]].local_name()
                    env[ENV_SAGEMAKER_RUNTIME_URL] = endpoints[refs[0]]
                elif key == ENV_SAGEMAKER_INFERENCE_COMPONENT and component_refs:
                    env[key] = components[component_refs[0]].local_name(component_refs[0])
                elif key == ENV_TENANT_KEY_IDS:
                    # Fn::Join(",", [Fn::Join("=", [tenant, Ref key])...]): the local API's key ids instead
                    names = [pair["Fn::Join"][1][0] for pair in value["Fn::Join"][1]]
                    env[key] = ",".join(f"{name}={local_key_id(name)}" for name in names)
                    result.tenanted = True
                else:
                    raise TemplateError(
                        f"function {fid}: {key} is only known once deployed ({json.dumps(value)[:80]}); "
                        f"models with lambda.artifact = 's3' cannot be served from the template locally"
                    )
            layers = [host_layer_view(layer, shared_root, cache_dir) for layer in fdef.layers]
            name = env.get(ENV_MODEL_NAME) or fid
            function = WorkerFunction(
                name, fdef.asset, layers, env, handler=fdef.handler, extra=[provided],
                memory_mb=fdef.memory_mb, timeout_s=fdef.timeout_s,
            )
            result.functions[fid] = function
            result.instances[fid] = FunctionInstance(function.name, function, function.memory_mb, function.timeout_s)
        for method in assembly.methods:
            result.routes.append(Route(method.http_method, method.path, result.instances[method.function_id],
                                       api_key_required=method.api_key_required))
            result.api_key_required |= method.api_key_required
    except BaseException:
        result.close()
        raise
    return result


def keyed_api(built: TemplateStack, api_key: str | None) -> tuple[LocalApi, str | None]:
    """The local API for the template's routes, checking the key where its methods require one
    (ApiKeyRequired); with no key given for such a template, a fresh one is made (as API Gateway
    makes the stack's key) and returned as the second value."""
    generated = secrets.token_urlsafe(24) if built.api_key_required and not api_key else None
    return LocalApi(built.routes, api_key=api_key or generated), generated


def serve(cdk_out: str | os.PathLike, root: Path, host: str = DEFAULT_HOST, port: int = 3000,
          api_key: str | None = None, stack: str | None = None, out=sys.stdout) -> int:
    try:
        built = template_stack(cdk_out, root, stack)
    except TemplateError as exc:
        print(f"cannot serve the template: {exc}", file=out)
        return 1
    gate, new_keys = None, []
    if built.tenanted:
        from .manifest import find_manifest, load_manifest

        gate, new_keys = TenantGate.from_manifest(load_manifest(find_manifest(Path(root))))
        api, generated = LocalApi(built.routes, tenants=gate), None
    else:
        api, generated = keyed_api(built, api_key or os.environ.get(ENV_API_KEY))
    url = api.start(host, port)
    print(f"maas local API from {cdk_out} on {url} ({len(built.functions)} functions, "
          f"{len(built.routes)} methods{', API key required' if built.api_key_required else ''})", file=out)
    if generated:
        print(f"  x-api-key: {generated}   (generated; pass --api-key or set {ENV_API_KEY} to choose one)", file=out)
    for tenant in new_keys:
        print(f"  tenant {tenant}: x-api-key {gate.keys[tenant]}   (generated once into .maas/tenant-keys.json)", file=out)
    for route in sorted(built.routes, key=lambda r: r.resource):
        print(f"  {route.method:5} {url}{route.resource}  -> {route.target.name}", file=out)
    print("(Ctrl-C stops)", file=out, flush=True)
    return serve_until_interrupted(api, built)


__all__ = ["Assembly", "TemplateError", "WorkerFunction", "load_assembly", "serve", "template_stack", "FUNCTIONS_DIR"]
