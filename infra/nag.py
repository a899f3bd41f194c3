"""cdk-nag acknowledgements (v3: CDK's Validations.of(scope).acknowledge), always with a reason.

An acknowledgement covers the construct and everything under it. A rule may be narrowed to
specific findings (`AwsSolutions-IAM5[Resource::*]`) by passing `findings`.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct


def acknowledge(scope: IConstruct, rule: str, reason: str, findings: tuple[str, ...] = ()) -> None:
    if not reason or len(reason) < 20:
        raise ValueError(f"acknowledging {rule} needs a written reason")
    for rule_id in ([f"{rule}[{f}]" for f in findings] or [rule]):
        Validations.of(scope).acknowledge(Acknowledgment(id=rule_id, reason=reason))
