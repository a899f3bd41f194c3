"""The `maas` command line. Each subcommand is a thin wrapper over a module of its own."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .manifest import ManifestError, find_manifest, load_manifest


def _manifest(args):
    return load_manifest(Path(args.manifest) if args.manifest else find_manifest())


def cmd_build(args) -> int:
    from .build import BuildError, build_models

    manifest = _manifest(args)
    try:
        results = build_models(manifest, args.models, force=args.force)
    except BuildError as exc:
        print(f"build failed: {exc}", file=sys.stderr)
        return 1
    for result in results:
        print(result.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maas", description="Serverless model deployment kit")
    parser.add_argument("--manifest", help="path to models.toml (default: nearest one upwards)")
    sub = parser.add_subparsers(dest="command", required=True)

    build = sub.add_parser("build", help="export, optimize, prune, quantize and verify models")
    build.add_argument("models", nargs="*", help="model names (default: all in the manifest)")
    build.add_argument("--force", action="store_true", help="rebuild even if the cached artifact matches")
    build.set_defaults(func=cmd_build)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ManifestError as exc:
        print(f"manifest error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
