"""The field's own linters on the synthesized template: cfn-lint (with cfn-lint-serverless's
rules) and checkov.

Every warning or failed check they still report is listed, with its reason, in one file:
infra/lint-exceptions.toml. `LintExceptions`, an aspect the app adds, writes each entry into the
metadata of the resources it covers, in the form each tool honours
(`Metadata.cfn-lint.config.ignore_checks`, `Metadata.checkov.skip` with the reason as comment),
so `cfn-lint` and `checkov` run on cdk.out by anyone report nothing else, and the reason is in
the template beside the resource. tests/infra/test_lint.py runs both tools in the test suite,
and fails on any finding not listed and on any entry that no longer matches a finding.

An entry covers resources by CloudFormation type, optionally narrowed to construct paths
(fnmatch patterns, e.g. "*/Artifacts/AccessLogs/*").
"""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass
from pathlib import Path

import jsii
from aws_cdk import CfnResource, IAspect, Stack
from constructs import IConstruct

EXCEPTIONS_FILE = Path(__file__).with_name("lint-exceptions.toml")
TOOLS = ("cfn-lint", "checkov")


class LintConfigError(ValueError):
    """lint-exceptions.toml has an entry without a rule, a resource type or a reason."""


@dataclass(frozen=True)
class LintException:
    tool: str
    rule: str
    types: tuple[str, ...]
    reason: str
    paths: tuple[str, ...] = ("*",)

    def covers(self, resource_type: str, path: str) -> bool:
        return resource_type in self.types and any(fnmatch.fnmatchcase(path, p) for p in self.paths)


def load_exceptions(path: Path = EXCEPTIONS_FILE) -> list[LintException]:
    data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    unknown = sorted(set(data) - set(TOOLS))
    if unknown:
        raise LintConfigError(f"{path.name}: unknown table(s) {', '.join(unknown)}; use {' or '.join(TOOLS)}")
    found = []
    for tool in TOOLS:
        for i, entry in enumerate(data.get(tool, [])):
            where = f"{path.name}: {tool}[{i}]"
            extra = sorted(set(entry) - {"rule", "types", "paths", "reason"})
            if extra:
                raise LintConfigError(f"{where}: unknown key(s) {', '.join(extra)}")
            if not entry.get("rule") or not entry.get("types"):
                raise LintConfigError(f"{where}: needs a rule and the resource types it covers")
            if len(str(entry.get("reason", "")).strip()) < 20:
                raise LintConfigError(f"{where} ({entry.get('rule')}): needs a written reason")
            found.append(LintException(
                tool=tool, rule=str(entry["rule"]), types=tuple(entry["types"]), reason=" ".join(entry["reason"].split()),
                paths=tuple(entry.get("paths") or ("*",)),
            ))
    return found


def resource_paths(stack: Stack) -> dict[str, tuple[str, str]]:
    """logical id -> (CloudFormation type, construct path) of every resource of the stack."""
    found = {}
    for node in stack.node.find_all():
        if isinstance(node, CfnResource) and Stack.of(node) is stack:
            found[stack.resolve(stack.get_logical_id(node))] = (node.cfn_resource_type, node.node.path)
    return found


@jsii.implements(IAspect)
class LintExceptions:
    """Writes the listed exceptions into the metadata of the resources they cover."""

    def __init__(self, exceptions: list[LintException]):
        self.exceptions = exceptions

    def visit(self, node: IConstruct) -> None:
        if not isinstance(node, CfnResource):
            return
        mine = [e for e in self.exceptions if e.covers(node.cfn_resource_type, node.node.path)]
        cfn_lint = sorted({e.rule for e in mine if e.tool == "cfn-lint"})
        if cfn_lint:
            node.add_metadata("cfn-lint", {"config": {"ignore_checks": cfn_lint}})
        checkov = [{"id": e.rule, "comment": e.reason} for e in mine if e.tool == "checkov"]
        if checkov:
            node.add_metadata("checkov", {"skip": checkov})
