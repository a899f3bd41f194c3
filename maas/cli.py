"""The `maas` command line. Each subcommand is a thin wrapper over a module of its own."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .manifest import ManifestError, find_manifest, load_manifest


def _manifest(args):
    return load_manifest(Path(args.manifest) if args.manifest else find_manifest())


def cmd_build(args) -> int:
    from .builder import BuildError, build_models

    manifest = _manifest(args)
    try:
        results = build_models(manifest, args.models, force=args.force, sign_key=args.sign_key)
    except BuildError as exc:
        print(f"build failed: {exc}", file=sys.stderr)
        return 1
    for result in results:
        print(result.summary())
    return 0


def cmd_sign(args) -> int:
    from .builder.signing import SigningError, manifest_signer, sign_models

    manifest = _manifest(args)
    try:
        signed = sign_models(manifest, args.models, manifest_signer(manifest, args.key))
    except SigningError as exc:
        print(f"signing failed: {exc}", file=sys.stderr)
        return 1
    for item in signed:
        print(f"{item.name}: signed {item.folder.relative_to(manifest.root)}/card.json with {item.key_id}")
    return 0


def cmd_keygen(args) -> int:
    from .builder.signing import SigningError, keygen, kms_public_key, read_public_key
    from maas_runtime import ENV_SIGNING_PUBLIC_KEYS, TrustedKeys

    try:
        if args.kms:
            public = kms_public_key(args.kms, args.prefix)
            print(f"wrote {public} (the public half of {args.kms}; the private key stays in KMS)")
        else:
            private, public = keygen(args.prefix)
            print(f"wrote {private} (private, mode 0600: keep it out of the repository) and {public}")
        value = TrustedKeys([read_public_key(public)]).value()
    except SigningError as exc:
        print(f"keygen failed: {exc}", file=sys.stderr)
        return 1
    print(f"list {public} in models.toml's signing.public_keys; a function trusts it with {ENV_SIGNING_PUBLIC_KEYS}={value}")
    return 0


def cmd_serve(args) -> int:
    if args.template:
        from . import template_api

        root = Path(args.manifest).resolve().parent if args.manifest else find_manifest().parent
        return template_api.serve(args.template, root, host=args.host, port=args.port, api_key=args.api_key,
                                  stack=args.stack)
    from .local_api import serve

    return serve(_manifest(args), host=args.host, port=args.port, api_key=args.api_key, verbose=args.verbose)


def cmd_invoke(args) -> int:
    import json

    from .local_api import invoke

    try:
        parameters = json.loads(args.parameters) if args.parameters else {}
    except ValueError as exc:
        print(f"--parameters is not JSON: {exc}", file=sys.stderr)
        return 2
    try:
        status, body = invoke(args.model, args.inputs, url=args.url, parameters=parameters, api_key=args.api_key)
    except OSError as exc:
        print(f"cannot reach {args.url}: {exc} (is `maas serve` running?)", file=sys.stderr)
        return 1
    print(json.dumps(body, indent=2))
    return 0 if status < 400 else 1


def cmd_usage(args) -> int:
    import json

    from .usage import as_json, cloudwatch_usage, local_usage, parse_since, render

    manifest = _manifest(args)
    try:
        since = parse_since(args.since)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.tenant and args.tenant not in {t.name for t in manifest.tenants}:
        print(f"unknown tenant {args.tenant!r} (the manifest has: {', '.join(t.name for t in manifest.tenants) or 'none'})",
              file=sys.stderr)
        return 2
    if args.local:
        rows, source = local_usage(manifest, args.tenant, since), "the local API's counters"
    else:
        rows, source = cloudwatch_usage(manifest, args.tenant, since), "CloudWatch"
    if args.json:
        print(json.dumps(as_json(rows, since, source), indent=2))
    else:
        print("\n".join(render(rows, since, source)))
    return 0


def cmd_smoke(args) -> int:
    import os

    from maas_api.constants import ENV_API_KEY

    from .smoke import run_smoke

    report = run_smoke(args.url, args.api_key or os.environ.get(ENV_API_KEY), _manifest(args))
    for line in report.lines():
        print(line)
    return 0 if report.passed else 1


def cmd_bench(args) -> int:
    from .bench import BenchError, run_bench

    manifest = _manifest(args)
    root = manifest.root
    if args.explain:
        return _bench_explain(manifest, args)
    try:
        results = run_bench(
            manifest,
            args.models,
            quick=args.quick,
            out_dir=Path(args.out) if args.out else root / "bench-results",
            docs_dir=None if args.quick else root / "docs" / "bench",
            markdown=Path(args.markdown) if args.markdown else (None if args.quick else root / "BENCHMARKS.md"),
            rounds=args.rounds,
        )
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    for name, m in results["models"].items():
        for row in m["targets"]:
            print(f"{name}: {row['target']} = {row['value']} (goal {row['goal']:.3g}, met={row['met']})")
    return 0


def _bench_explain(manifest, args) -> int:
    """Only the explain route's latency; rewrites only that section of BENCHMARKS.md."""
    from .bench import machine_info
    from .bench.explain import THREADS, bench_explanations, render_explain, update_section

    results = bench_explanations(manifest, args.models, 3 if args.quick else 15)
    markdown = Path(args.markdown) if args.markdown else (None if args.quick else manifest.root / "BENCHMARKS.md")
    if markdown is not None:
        update_section(markdown, render_explain(results, machine_info(THREADS)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maas", description="Serverless model deployment kit")
    parser.add_argument("--manifest", help="path to models.toml (default: nearest one upwards)")
    sub = parser.add_subparsers(dest="command", required=True)

    build = sub.add_parser("build", help="export, optimize, prune, quantize and verify models")
    build.add_argument("models", nargs="*", help="model names (default: all in the manifest)")
    build.add_argument("--force", action="store_true", help="rebuild even if the cached artifact matches")
    build.add_argument("--sign-key", metavar="KEY",
                       help="sign the cards with this key (a PEM file or kms:<key ARN>) instead of signing.key")
    build.set_defaults(func=cmd_build)

    sign = sub.add_parser("sign", help="sign built models' cards (card.sig) without rebuilding them")
    sign.add_argument("models", nargs="*", help="model names (default: all in the manifest)")
    sign.add_argument("--key", help="a PEM private key file or kms:<key ARN> (default: the manifest's signing.key)")
    sign.set_defaults(func=cmd_sign)

    keygen = sub.add_parser("keygen", help="create an Ed25519 signing key pair, or fetch a KMS key's public key")
    keygen.add_argument("prefix", help="writes PREFIX.key (private, 0600) and PREFIX.pub.pem, e.g. keys/maas")
    keygen.add_argument("--kms", metavar="KEY_ARN", help="write only PREFIX.pub.pem, the public key of this KMS key")
    keygen.set_defaults(func=cmd_keygen)

    bench = sub.add_parser("bench", help="cold start, latency, size and cost against the PyTorch baseline")
    bench.add_argument("models", nargs="*", help="model names (default: every Lambda model)")
    bench.add_argument("--quick", action="store_true", help="every measurement once (CI); writes no BENCHMARKS.md")
    bench.add_argument("--out", help="folder for results.json and plots (default: bench-results/)")
    bench.add_argument("--markdown", help="where to write the report (default: BENCHMARKS.md; none with --quick)")
    bench.add_argument("--rounds", type=int, help="cold starts and latency rounds per variant (default 7 and 5)")
    bench.add_argument("--explain", action="store_true",
                       help="only the explain route's latency at the default budget (its section of the report)")
    bench.set_defaults(func=cmd_bench)

    serve = sub.add_parser("serve", help="run the API locally on 127.0.0.1 with the Lambda handlers in-process")
    serve.add_argument("--port", type=int, default=3000)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--api-key", help="require this x-api-key header (default: $MAAS_API_KEY, else none)")
    serve.add_argument("--verbose", action="store_true", help="log every request (Powertools INFO logs)")
    serve.add_argument("--template", metavar="CDK_OUT",
                       help="serve what `cdk synth` put in this cloud assembly (e.g. cdk.out) instead of the manifest")
    serve.add_argument("--stack", help="with --template: the stack to serve (default: the only one)")
    serve.set_defaults(func=cmd_serve)

    invoke = sub.add_parser("invoke", help="call a model on the local API and print the JSON answer")
    invoke.add_argument("model")
    invoke.add_argument("inputs", nargs="+", metavar="INPUT", help="text, or a JSON array (a digits image)")
    invoke.add_argument("--url", default="http://127.0.0.1:3000")
    invoke.add_argument("--parameters", help='JSON object, e.g. \'{"top_k": 3}\'')
    invoke.add_argument("--api-key")
    invoke.set_defaults(func=cmd_invoke)

    usage = sub.add_parser("usage", help="requests, inputs and tokens per tenant and model (CloudWatch, or --local)")
    usage.add_argument("--tenant", help="one tenant only (default: every tenant of the manifest)")
    usage.add_argument("--since", help="a date (2026-11-01), a timestamp, or days back (7d); default 30 days back")
    usage.add_argument("--local", action="store_true", help="the local API's counters (.maas/usage.json), not CloudWatch")
    usage.add_argument("--json", action="store_true", help="print JSON instead of a table")
    usage.set_defaults(func=cmd_usage)

    smoke = sub.add_parser("smoke", help="check a deployed API end to end (run it right after `cdk deploy`)")
    smoke.add_argument("--url", required=True, help="the API's base URL: the stack's ApiUrl output, or maas serve's")
    smoke.add_argument("--api-key", help="the x-api-key value (default: $MAAS_API_KEY); without one, "
                       "the check that a missing key is refused is skipped")
    smoke.set_defaults(func=cmd_smoke)
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
