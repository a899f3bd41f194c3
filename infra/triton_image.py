"""AWS's NVIDIA Triton image for SageMaker: `<account>.dkr.ecr.<region>.<suffix>/sagemaker-tritonserver:<tag>`.

The ECR account differs by region (763104351884 in most, one account each in af-south-1,
il-central-1, ...). Which region has which account is the SageMaker Python SDK's published table,
`sagemaker/core/image_uri_config/sagemaker-tritonserver.json` in the `sagemaker-core` wheel;
infra/data/sagemaker_tritonserver.json holds the part of it this kit uses, generated from that
wheel (so synth needs no SDK):

    python -m infra.triton_image --refresh     # rewrite the data file from the installed sagemaker-core
    python -m infra.triton_image --check       # exit 1 when the data file differs from it

CDK's region facts (FactName.DLC_REPOSITORY_ACCOUNT) agree with the SDK wherever both know a
region, but lack regions that have the image (af-south-1, il-central-1, ...) and list regions that
do not (cn-*), so they are only a cross-check (tests/infra/test_triton_image.py).

Why 26.05 and that AMI: the newest tag in the SDK's table; Triton 2.69 with ONNX Runtime 1.24.4
on CUDA 13.2, which needs NVIDIA driver 580. A real-time ml.g5 instance gets driver 470 (CUDA
11.4) unless the production variant asks for the al2023 GPU 4.1 inference AMI (driver 580).
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import PackageNotFoundError, files, version
from pathlib import Path

from maas.manifest import ManifestError

TRITON_VERSION = "26.05"
REPOSITORY = "sagemaker-tritonserver"
INFERENCE_AMI_VERSION = "al2023-ami-sagemaker-inference-gpu-4-1"
"""The production variant's InferenceAmiVersion: NVIDIA driver 580 / CUDA 13.0, which the image needs."""
DATA_FILE = Path(__file__).resolve().parent / "data" / "sagemaker_tritonserver.json"
SOURCE_PACKAGE = "sagemaker-core"
SOURCE_FILE = "sagemaker-tritonserver.json"


class ImageNotPublished(ManifestError):
    """The stack's region has no sagemaker-tritonserver image of the pinned version: a heavy model
    of the manifest cannot be deployed there as it is (synth says so, as for any manifest error)."""


def from_sdk(triton_version: str = TRITON_VERSION) -> dict:
    """What the installed sagemaker-core publishes for the GPU image of ``triton_version``.

    The JSON is read as package data; sagemaker.core itself is never imported (its dependencies
    are not installed: see pyproject.toml's [tool.maas])."""
    try:
        path = next(f for f in files(SOURCE_PACKAGE) or () if f.name == SOURCE_FILE)
    except (PackageNotFoundError, StopIteration):
        raise RuntimeError(f"{SOURCE_PACKAGE} is not installed: pip install --no-deps {SOURCE_PACKAGE}") from None
    table = json.loads(path.read_text(encoding="utf-8"))
    entry = table["versions"][triton_version]
    if "gpu" not in table["processors"] or entry["repository"] != REPOSITORY:
        raise RuntimeError(f"{SOURCE_FILE} no longer describes a GPU {REPOSITORY} image")
    return {
        "source": f"{SOURCE_PACKAGE} {version(SOURCE_PACKAGE)}: {path.as_posix()}",
        "version": triton_version,
        "repository": entry["repository"],
        "tag": entry["tag_prefix"],  # the GPU tag; the CPU image's adds "-cpu"
        "registries": dict(sorted(entry["registries"].items())),
    }


def load() -> dict:
    data = json.loads(DATA_FILE.read_text(encoding="utf-8"))
    if data["version"] != TRITON_VERSION:
        raise RuntimeError(f"{DATA_FILE.name} is for Triton {data['version']}, not {TRITON_VERSION}: run `python -m infra.triton_image --refresh`")
    return data


def account_for(region: str, data: dict | None = None) -> str:
    data = data or load()
    try:
        return data["registries"][region]
    except KeyError:
        raise ImageNotPublished(
            f"AWS publishes no {data['repository']}:{data['tag']} image in {region} (it does in "
            f"{len(data['registries'])} regions: {', '.join(data['registries'])}); deploy to one of those, or set "
            "sagemaker.image_uri in models.toml"
        ) from None


def image_uri(account: str, region: str, url_suffix: str, data: dict | None = None) -> str:
    data = data or load()
    return f"{account}.dkr.ecr.{region}.{url_suffix}/{data['repository']}:{data['tag']}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.triton_image", description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--refresh", action="store_true", help=f"rewrite {DATA_FILE.name} from the installed {SOURCE_PACKAGE}")
    group.add_argument("--check", action="store_true", help=f"exit 1 when {DATA_FILE.name} differs from it")
    args = parser.parse_args(argv)
    fresh = from_sdk()
    if args.refresh:
        DATA_FILE.write_text(json.dumps(fresh, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {DATA_FILE} ({len(fresh['registries'])} regions)")
        return 0
    same = json.loads(DATA_FILE.read_text(encoding="utf-8")) == fresh
    print(f"{DATA_FILE.name} {'matches' if same else 'differs from'} {fresh['source']}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
