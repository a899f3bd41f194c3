"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Tests never reach AWS or X-Ray: fake credentials and a default region keep boto3 happy under moto.
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        item.stash[_FAILED] = True
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """Delete a passed test's tmp_path as soon as its fixtures are torn down. pytest only prunes at
    the end of the session, and the suite writes about 3 GB of synthesized assemblies and model
    copies: on a nearly full CI disk that ran out before the last tests (ENOSPC)."""
    path = getattr(item, "funcargs", {}).get("tmp_path")
    try:
        return (yield)
    finally:
        if path is not None and not item.stash.get(_FAILED, False):
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def manifest():
    from maas.manifest import load_manifest

    return load_manifest(REPO / "models.toml")


@pytest.fixture(scope="session")
def built(manifest):
    """The shipped demo models' live versions, built once with every kept version (a cache hit when
    `maas build` already ran)."""
    from maas.builder import build_models

    return {r.name: r for r in build_models(manifest) if r.version == manifest.get(r.name).version}
