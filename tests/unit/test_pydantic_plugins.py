"""A Lambda entry disables pydantic's plugins without importing pydantic's plugin loader (maas_api.function)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"

# A fresh interpreter each time: what is imported is the point.
SCRIPT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from maas_api.errors import ApiError
from maas_api.function import LambdaEntry, build_validators, validated_body
from maas_api.schemas import InvokeRequest
LambdaEntry(lambda: None, lambda backend: None)
build_validators()
errors = []
for body in ({"inputs": []}, {"inputs": ["a"], "extra": 1}, {"parameters": {}}):
    try:
        validated_body(InvokeRequest, body)
    except ApiError as exc:
        errors.append([int(exc.status), exc.code, exc.message])
print(json.dumps({"metadata_imported": "importlib.metadata" in sys.modules,
                  "inputs": validated_body(InvokeRequest, {"inputs": ["a", "b"]}).inputs, "errors": errors}))
"""


def _run(disable_plugins: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    if disable_plugins is not None:
        env["PYDANTIC_DISABLE_PLUGINS"] = disable_plugins
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(SHARED)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("setting", [None, "__all__", "true"])
def test_all_plugins_disabled_skips_the_loader_and_validates_the_same(setting):
    # GIVEN a Lambda entry in a process where every plugin is disabled (by default, or by the user)
    fast = _run(setting)
    # ... and one where the user names a plugin to disable, so pydantic must look the others up
    looked_up = _run("some-plugin")
    # THEN only the latter imports importlib.metadata (the ~20 ms the loader's import costs) ...
    assert fast["metadata_imported"] is False
    assert looked_up["metadata_imported"] is True
    # ... and validation is the same: the valid body passes, each invalid one fails alike
    assert fast["inputs"] == looked_up["inputs"] == ["a", "b"]
    assert fast["errors"] == looked_up["errors"] and len(fast["errors"]) == 3
    assert all(status == 422 for status, _, _ in fast["errors"])
