"""The CDK app: per-model Lambda functions, shared layers, heavy-model endpoints and one API.

app.py reads the manifest and the build output and composes `MaasStack` (stack.py) from a few
constructs, one per file, each configured by a frozen `<Construct>Props` dataclass whose
defaults are documented there: ModelFunction, HeavyModelEndpoint, ModelApi (its routes come
from maas_api.routes), RuntimeLayers, ArtifactBucket, AlarmTopic and ModelMonitoring. staging.py
prepares every asset in plain Python before synth (no Docker bundling).
"""
