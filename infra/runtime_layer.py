"""RuntimeLayers: the slim Lambda layers (maas.layers), one LayerVersion per layer and architecture.

Layers are built with pip for the target platform (no Docker) and cached under .cache/layers;
only the architectures some function uses are built. `layers_for(architecture, names)` returns the
LayerVersions a function needs; `built` keeps each layer's report (sizes, what was left out).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aws_cdk import AssetHashType, RemovalPolicy
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from maas import layers as layer_builder

ARCHITECTURES = {"arm64": lambda_.Architecture.ARM_64, "x86_64": lambda_.Architecture.X86_64}
RUNTIME = lambda_.Runtime.PYTHON_3_12


@dataclass(frozen=True)
class RuntimeLayersProps:
    shared_root: Path
    """The folder holding the layers' own packages (maas_runtime, maas_api)."""
    cache_dir: Path
    """Where built layers are kept between synths (.cache/layers)."""


class RuntimeLayers(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: RuntimeLayersProps) -> None:
        super().__init__(scope, construct_id)
        self.shared_root = Path(props.shared_root)
        self.cache_dir = Path(props.cache_dir)
        self.built: dict[tuple[str, str], layer_builder.BuiltLayer] = {}
        self._versions: dict[tuple[str, str], lambda_.LayerVersion] = {}

    def layer(self, name: str, architecture: str) -> lambda_.LayerVersion:
        key = (name, architecture)
        if key not in self._versions:
            spec = layer_builder.LAYERS[name]
            built = layer_builder.build_layer(
                spec, layer_builder.platform_for(architecture), self.shared_root, self.cache_dir, log=_log
            )
            self.built[key] = built
            version = lambda_.LayerVersion(
                self,
                f"{name.capitalize()}{architecture.replace('_', '').capitalize()}",
                # The cache key already hashes everything the layer is made from: no re-hashing.
                code=lambda_.Code.from_asset(built.path, asset_hash=built.key, asset_hash_type=AssetHashType.CUSTOM),
                compatible_runtimes=[RUNTIME],
                compatible_architectures=[ARCHITECTURES[architecture]],
                description=f"maas {name} layer ({architecture}, Python {built.python_version}): {spec.description}"[:256],
                removal_policy=RemovalPolicy.RETAIN,  # published versions stay usable by rolled-back functions
            )
            self._versions[key] = version
        return self._versions[key]

    def layers_for(self, architecture: str, names: tuple[str, ...]) -> list[lambda_.LayerVersion]:
        return [self.layer(name, architecture) for name in names]

    def unzipped_bytes(self, architecture: str, names: tuple[str, ...]) -> int:
        return sum(self.built[(n, architecture)].unzipped_bytes for n in names)


def _log(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)
