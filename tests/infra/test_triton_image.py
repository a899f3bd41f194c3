"""infra/data/sagemaker_tritonserver.json: generated from the SageMaker SDK's table, and CDK agrees."""

from __future__ import annotations

import pytest
from aws_cdk.region_info import FactName, RegionInfo

from infra import triton_image


def test_the_committed_table_is_what_the_installed_sdk_publishes():
    try:
        fresh = triton_image.from_sdk()
    except RuntimeError as exc:
        pytest.skip(f"{exc} (`make setup` installs it)")
    # GIVEN the data file synth reads, WHEN compared with the SDK's JSON THEN they are the same
    assert triton_image.load() == fresh, "run `python -m infra.triton_image --refresh`"
    assert fresh["tag"] == f"{triton_image.TRITON_VERSION}-py3" and fresh["repository"] == "sagemaker-tritonserver"


def test_reading_the_sdks_table_does_not_import_the_sdk():
    import subprocess
    import sys

    code = "import sys; from infra import triton_image; triton_image.from_sdk(); print('sagemaker.core' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    if "not installed" in out.stderr:
        pytest.skip("sagemaker-core is installed (--no-deps) by `make setup`")
    assert out.stdout.strip() == "False", out.stderr


def test_cdks_dlc_account_fact_agrees_wherever_both_know_a_region():
    registries = triton_image.load()["registries"]
    assert FactName.DLC_REPOSITORY_ACCOUNT == "dlcRepositoryAccount"
    both = {r: a for r, a in registries.items() if RegionInfo.get(r).dlc_repository_account}
    assert len(both) >= 20
    for region, account in both.items():
        assert RegionInfo.get(region).dlc_repository_account == account, region
    # CDK's facts lack regions where the image is published, which is why the SDK's table is the source.
    assert {r for r in registries if not RegionInfo.get(r).dlc_repository_account} >= {"af-south-1", "il-central-1"}


def test_the_check_command_says_whether_the_file_is_current(capsys):
    try:
        triton_image.from_sdk()
    except RuntimeError as exc:
        pytest.skip(f"{exc} (`make setup` installs it)")
    assert triton_image.main(["--check"]) == 0
    assert "matches sagemaker-core" in capsys.readouterr().out
