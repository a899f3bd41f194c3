"""cfn-lint (with cfn-lint-serverless's rules) and checkov on the synthesized templates.

Both tools run on the shipped manifest's template and on a variant (a second SageMaker model, an
S3 artifact with its buckets and BucketDeployment): no error, and no warning or failed check
beyond those infra/lint-exceptions.toml lists with a reason. Every entry there must still match
a finding (the tools run once more without the exceptions), so the list cannot outlive its
reasons. The tools live in their own virtual environment (`make lint-tools`): checkov pins
versions of boto3, packaging and networkx that the project's environment does not use.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from infra.lint import load_exceptions, resource_paths

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / ".cache" / "tools" / "iac-lint" / "bin"
CFN_LINT = TOOLS / "cfn-lint"
CHECKOV = TOOLS / "checkov"
SUPPRESSIONS = ("cfn-lint", "checkov")
"""The resource metadata keys infra/lint.py writes."""


@pytest.fixture(scope="module")
def tools():
    missing = [p.name for p in (CFN_LINT, CHECKOV) if not p.exists()]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: run `make lint-tools`")
    return TOOLS


def _write(template: dict, path: Path, strip: bool = False) -> Path:
    if strip:
        template = json.loads(json.dumps(template))
        for resource in template["Resources"].values():
            for key in SUPPRESSIONS:
                (resource.get("Metadata") or {}).pop(key, None)
    path.write_text(json.dumps(template, indent=1))
    return path


def cfn_lint(path: Path) -> list[dict]:
    """(level, rule, resource, message) of every finding; informational ones are not reported."""
    started = time.perf_counter()
    result = subprocess.run([str(CFN_LINT), "-a", "cfn_lint_serverless.rules", "--format", "json", "-t", str(path)],
                            capture_output=True, text=True, timeout=600)
    print(f"\ncfn-lint {path.name}: {time.perf_counter() - started:.1f} s")
    assert result.returncode & ~0b1110 == 0, result.stderr[-2000:]  # bit flags: 2 errors, 4 warnings, 8 info
    return [{"level": f["Level"], "rule": f["Rule"]["Id"], "resource": f["Location"]["Path"][1]
             if f["Location"]["Path"][:1] == ["Resources"] else None, "message": f["Message"]}
            for f in json.loads(result.stdout or "[]")]


def checkov(path: Path) -> dict:
    started = time.perf_counter()
    result = subprocess.run([str(CHECKOV), "-f", str(path), "--framework", "cloudformation", "--skip-download",
                             "-o", "json"], capture_output=True, text=True, timeout=600)
    print(f"\ncheckov {path.name}: {time.perf_counter() - started:.1f} s")
    assert result.returncode in (0, 1), result.stderr[-2000:]  # 1: failed checks
    report = json.loads(result.stdout)
    return report.get("results", {}) if isinstance(report, dict) else {}


def _logical_id(checkov_resource: str) -> str:
    return checkov_resource.split(".", 1)[1]  # "AWS::Lambda::Function.MinilmFunction82C918DA"


@pytest.fixture(scope="module")
def reports(tools, synth, variant, tmp_path_factory):
    """Per template: cfn-lint's findings with and without the exceptions, checkov's results."""
    folder = tmp_path_factory.mktemp("lint")
    found = {}
    for which, result in (("shipped", synth), ("variant", variant)):
        found[which] = {
            "result": result,
            "cfn-lint": cfn_lint(_write(result.template, folder / f"{which}.template.json")),
            "cfn-lint without exceptions": cfn_lint(_write(result.template, folder / f"{which}.stripped.json", strip=True)),
            "checkov": checkov(folder / f"{which}.template.json"),
        }
    return found


@pytest.mark.parametrize("which", ["shipped", "variant"])
def test_cfn_lint_reports_nothing_unlisted(reports, which):
    findings = reports[which]["cfn-lint"]
    assert findings == [], "\n".join(f"{f['level']} {f['rule']} {f['resource']}: {f['message']}" for f in findings)


@pytest.mark.parametrize("which", ["shipped", "variant"])
def test_checkov_fails_nothing_unlisted(reports, which):
    failed = [f"{f['check_id']} {f['resource']}: {f['check_name']}" for f in reports[which]["checkov"].get("failed_checks", [])]
    assert failed == [], "\n".join(failed)


def test_every_listed_exception_still_matches_a_finding(reports):
    exceptions = load_exceptions()
    used = set()
    for report in reports.values():
        paths = resource_paths(report["result"].stack)
        # cfn-lint without the exceptions: each finding is listed, and marks its entry as used.
        for finding in report["cfn-lint without exceptions"]:
            kind, path = paths[finding["resource"]]
            covering = [e for e in exceptions if e.tool == "cfn-lint" and e.rule == finding["rule"] and e.covers(kind, path)]
            assert finding["level"] != "Error" and covering, finding
            used.update(covering)
        # checkov reports what the metadata made it skip, with the entry's reason as the comment.
        for skipped in report["checkov"].get("skipped_checks", []):
            kind, path = paths[_logical_id(skipped["resource"])]
            covering = [e for e in exceptions if e.tool == "checkov" and e.rule == skipped["check_id"] and e.covers(kind, path)]
            assert covering and skipped["check_result"].get("suppress_comment") in {e.reason for e in covering}, skipped
            used.update(covering)
    stale = [f"{e.tool} {e.rule} on {', '.join(e.types)}" for e in exceptions if e not in used]
    assert stale == [], f"infra/lint-exceptions.toml lists what no tool reports any more: {stale}"
