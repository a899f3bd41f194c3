"""Fixtures for the infrastructure tests: the demo models' artifacts and one synth per session."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def missing_artifacts(manifest) -> list[str]:
    from maas.paths import artifact_dir

    missing = [f"{s.name} {s.version}" for s in manifest.models
               if not (artifact_dir(manifest.root, s.name, s.version) / "card.json").is_file()]
    if not (manifest.root / "build" / "catalog.json").is_file():
        missing.append("build/catalog.json")
    return missing


@pytest.fixture(scope="session")
def artifacts(manifest):
    """The shipped models' build output; skips (with the command to run) when build/ lacks it."""
    missing = missing_artifacts(manifest)
    if missing:
        pytest.skip(f"models not built ({', '.join(missing)}): run `.venv/bin/maas build` first")
    return manifest


@dataclass
class Synth:
    app: object
    stack: object
    outdir: Path
    template: dict
    seconds: float

    @property
    def resources(self) -> dict:
        return self.template["Resources"]

    def of_type(self, kind: str) -> dict:
        return {k: v for k, v in self.resources.items() if v["Type"] == kind}


def synthesize(outdir: Path, context: dict | None = None) -> Synth:
    from infra.app import create_app

    started = time.perf_counter()
    app, stack = create_app(context=context, outdir=str(outdir))
    assembly = app.synth()
    seconds = time.perf_counter() - started
    template = assembly.get_stack_by_name(stack.stack_name).template
    return Synth(app, stack, outdir, json.loads(json.dumps(template)), seconds)


@pytest.fixture(scope="session")
def synthesizer():
    """synthesize(outdir, context) for tests that need a synth of their own manifest."""
    return synthesize


@pytest.fixture(scope="session")
def synth(artifacts, tmp_path_factory) -> Synth:
    """The shipped manifest synthesized once, in-process (cdk-nag runs: violations fail the synth)."""
    result = synthesize(tmp_path_factory.mktemp("cdk-out"))
    print(f"\nin-process synth: {result.seconds:.1f} s")
    return result
