"""The Lambda layers, built locally with pip for the function's platform: no Docker.

Two layers, so that each function carries only what it imports:

- ``runtime``: onnxruntime, tokenizers, numpy and ``maas_runtime`` (the model functions).
- ``api``: Powertools (bundled, see POWERTOOLS_CHOICE), pydantic, the X-Ray SDK and ``maas_api``
  (the model functions and the SageMaker proxy).

A layer is built by ``pip install --platform ... --only-binary=:all: --python-version ...
--implementation cp --target`` and then slimmed: only the distributions serving imports are kept
(``keep``; everything else pip pulled in is dropped, and listed in the layer's report), then
modules serving never imports (onnxruntime's quantization/transformers/tools, tests, headers,
type stubs) are deleted and native libraries stripped where a strip for that machine exists and
the library was not rewritten by auditwheel. Last, every module is compiled to bytecode by an
interpreter of the runtime's Python version, where this machine has one (`bytecode_compiler`).

Built layers are cached under ``.cache/layers/<name>-<platform>-<key>/``; the key hashes the
platform, the Python version, the pinned requirements, the slimming rules, this file and the
content of the shared code, so a second synth reuses the folder and only a real change rebuilds.
Each folder holds ``python/`` (the layer's content, /opt/python in Lambda) and ``layer.json``
(what was kept, dropped and pruned, and the sizes).
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import os
import platform as _platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .paths import CACHE_KEEP, folder_bytes, materialize, tree_hash

LAYER_PYTHON_VERSION = "3.12"
"""Lambda's runtime for every function (python3.12)."""

CACHE_DIR = Path(".cache") / "layers"
REPORT_FILE = "layer.json"
CONTENT_DIR = "python"

POWERTOOLS_CHOICE = (
    "Powertools is bundled in the api layer rather than taken from AWS's published layer: the "
    "version is pinned to the one the handlers are tested with, its size is measured and counted "
    "against the 250 MB limit, the layer's content is on disk for `maas serve --template`, and "
    "synth needs no per-region, per-partition layer ARN (AWS publishes none in some partitions)."
)

# Distributions the Lambda Python runtime already provides: never shipped in a layer.
LAMBDA_PROVIDED = ("boto3", "botocore", "s3transfer", "urllib3", "python-dateutil", "six")


@dataclass(frozen=True)
class Platform:
    """Where a layer will run: Lambda's arm64 or x86_64 (Python 3.12), or this machine (tests)."""

    name: str
    pip_platforms: tuple[str, ...]
    python_version: str
    machine: str

    @property
    def abi_tag(self) -> str:
        return "cp" + self.python_version.replace(".", "")


ARM64 = Platform("arm64", ("manylinux2014_aarch64", "manylinux_2_28_aarch64"), LAYER_PYTHON_VERSION, "aarch64")
X86_64 = Platform("x86_64", ("manylinux2014_x86_64", "manylinux_2_28_x86_64"), LAYER_PYTHON_VERSION, "x86_64")
PLATFORMS = {"arm64": ARM64, "x86_64": X86_64}


def host_platform() -> Platform:
    """This machine's platform and Python, for proving a layer built the same way still serves."""
    machine = _platform.machine().lower()
    if sys.platform != "linux" or machine not in ("x86_64", "aarch64"):
        raise LayerError(f"host layers need Linux on x86_64 or aarch64, not {sys.platform}/{machine}")
    tags = ("manylinux2014_" + machine, "manylinux_2_28_" + machine)
    return Platform("host", tags, f"{sys.version_info.major}.{sys.version_info.minor}", machine)


def platform_for(architecture: str) -> Platform:
    try:
        return PLATFORMS[architecture]
    except KeyError:
        raise LayerError(f"unknown Lambda architecture {architecture!r} (arm64 or x86_64)") from None


@dataclass(frozen=True)
class LayerSpec:
    """What goes into one layer and how it is slimmed."""

    name: str
    requirements: tuple[str, ...]
    keep: tuple[str, ...]
    """Distributions kept after pip resolved the requirements; everything else is dropped."""
    local_packages: tuple[str, ...]
    """Folders under shared/ copied in as top-level packages."""
    prune: tuple[str, ...] = ()
    """Globs (relative to python/) that serving never imports."""
    description: str = ""


class LayerError(RuntimeError):
    """A layer could not be built; the message says what to do."""


def _normalize(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


DISTRIBUTION = "maas-kit"


PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _requirements() -> list[str]:
    """pyproject.toml's `dependencies` where the source tree has it (an installed copy's metadata
    lags behind an edited pyproject until it is reinstalled), else the installed metadata."""
    if PYPROJECT.is_file():
        import tomllib

        return list(tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["dependencies"])
    from importlib.metadata import requires

    return [r for r in requires(DISTRIBUTION) or () if "extra ==" not in r]


def pinned(name: str) -> str:
    """The kit's own exact pin for a serve-time dependency (pyproject.toml's `dependencies`).

    The layers ship exactly what the kit is installed and tested with: one place for each pin.
    """
    for requirement in _requirements():
        spec = requirement.split(";")[0].strip()
        if _normalize(spec.split("[")[0].split("==")[0]) == _normalize(name) and "==" in spec:
            return spec
    raise LayerError(f"{DISTRIBUTION} has no exact pin for {name!r} in pyproject.toml's dependencies")


ONNXRUNTIME = pinned("onnxruntime")
TOKENIZERS = pinned("tokenizers")
NUMPY = pinned("numpy")
POWERTOOLS = pinned("aws-lambda-powertools")
PYDANTIC = pinned("pydantic")
ORJSON = pinned("orjson")
PYNACL = pinned("PyNaCl")

# Everywhere in a layer: no type stubs, no C headers, no test suites, and no bytecode pip or a
# wheel may have left (the layer's own is compiled afterwards: `compile_bytecode`).
COMMON_PRUNE = (
    "**/__pycache__",
    "**/*.pyc",
    "**/*.pyi",
    "**/py.typed",
    "**/tests",
    "bin",
)

RUNTIME = LayerSpec(
    name="runtime",
    requirements=(ONNXRUNTIME, TOKENIZERS, NUMPY, PYNACL),
    # onnxruntime also requires flatbuffers, protobuf, packaging (and sympy, coloredlogs in older
    # releases): used by its quantization and transformers tools, never by InferenceSession.
    # tokenizers requires huggingface_hub (and through it httpx, fsspec, tqdm, yaml, hf_xet):
    # used by Tokenizer.from_pretrained only; the runtime loads tokenizer.json from the artifact.
    # PyNaCl (card signatures) needs cffi's _cffi_backend at run time; cffi's Python package and
    # pycparser only compile C declarations into a module, which PyNaCl's wheel ships prebuilt.
    keep=("onnxruntime", "tokenizers", "numpy", "pynacl", "cffi"),
    local_packages=("maas_runtime",),
    prune=COMMON_PRUNE
    + (
        "onnxruntime/quantization",
        "onnxruntime/transformers",
        "onnxruntime/tools",
        "onnxruntime/datasets",
        "onnxruntime/backend",
        "onnxruntime/ThirdPartyNotices.txt",
        "numpy/f2py",
        "numpy/distutils",
        "numpy/_pyinstaller",
        "numpy/_core/include",
        "numpy/_core/lib/pkgconfig",
        "numpy/_core/_*_tests.*.so",
        "numpy/_core/_simd.*.so",
        "numpy/random/_examples",
        "numpy/doc",
        "tokenizers/tools",
        "cffi",  # the C-declaration compiler: PyNaCl's prebuilt module needs only _cffi_backend
    ),
    description="onnxruntime, tokenizers, numpy, PyNaCl and maas_runtime: what a model function loads",
)

API = LayerSpec(
    name="api",
    requirements=(POWERTOOLS, PYDANTIC, ORJSON),
    keep=(
        "orjson",  # response bodies: embeddings encode an order of magnitude faster than with json
        "aws-lambda-powertools",
        "jmespath",  # Logger's correlation paths; tiny, so not left to the runtime's copy
        "aws-xray-sdk",
        "wrapt",
        "pydantic",
        "pydantic-core",
        "annotated-types",
        "typing-extensions",
        "typing-inspection",
    ),
    local_packages=("maas_api",),
    prune=COMMON_PRUNE,
    description="Powertools (with pydantic and the X-Ray SDK), orjson and maas_api: what every function's handler loads",
)

LAYERS = {spec.name: spec for spec in (RUNTIME, API)}


@dataclass
class BuiltLayer:
    name: str
    platform: str
    machine: str
    python_version: str
    key: str
    path: str
    """The folder to give Lambda (it holds python/)."""
    requirements: list[str]
    kept: dict[str, dict] = field(default_factory=dict)
    """distribution -> {"version", "top_level": [...], "native": bool}"""
    dropped: dict[str, str] = field(default_factory=dict)
    """distribution -> version, pulled in by pip and left out."""
    pruned: list[str] = field(default_factory=list)
    stripped: list[str] = field(default_factory=list)
    not_stripped: list[str] = field(default_factory=list)
    local_packages: dict[str, str] = field(default_factory=dict)
    """package -> content hash of the shared code copied in."""
    unzipped_bytes: int = 0
    installed_bytes: int = 0
    """Before slimming: what pip put in --target."""
    bytecode: dict = field(default_factory=dict)
    """{"python": the compiling interpreter's version, "files", "bytes", "failed": [...]}, or
    {"python": None, "reason"} where no interpreter of the layer's Python version was found here."""

    @property
    def content(self) -> Path:
        return Path(self.path) / CONTENT_DIR

    @classmethod
    def read(cls, folder: Path) -> "BuiltLayer":
        data = json.loads((Path(folder) / REPORT_FILE).read_text())
        data["path"] = str(Path(folder).resolve())
        return cls(**data)


# --- hashing -----------------------------------------------------------------------------------


def layer_key(spec: LayerSpec, target: Platform, shared_root: Path, compiler: str | None = None) -> str:
    parts = {
        "spec": asdict(spec),
        "platform": asdict(target),
        "bytecode": compiler,  # a layer built where no compiler was found is rebuilt where one is
        "builder": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        "shared": {name: tree_hash(shared_root / name) for name in spec.local_packages},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


# --- building ----------------------------------------------------------------------------------


def _distributions(site: Path) -> dict[str, Path]:
    """normalized name -> its .dist-info folder, for what pip installed into site."""
    found = {}
    for info in site.glob("*.dist-info"):
        metadata = info / "METADATA"
        name = None
        if metadata.is_file():
            for line in metadata.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.startswith("Name:"):
                    name = line.split(":", 1)[1].strip()
                    break
        found[_normalize(name or info.name.split("-")[0])] = info
    return found


def _record_files(site: Path, info: Path) -> list[Path]:
    record = info / "RECORD"
    files = []
    if record.is_file():
        for line in record.read_text(encoding="utf-8", errors="replace").splitlines():
            rel = line.rsplit(",", 2)[0] if line.count(",") >= 2 else line
            if rel:
                files.append((site / rel).resolve())
    return files


def _version_of(info: Path) -> str:
    return info.name[: -len(".dist-info")].split("-", 1)[-1]


def _top_level(site: Path, files: list[Path]) -> list[str]:
    tops = set()
    site = site.resolve()
    for path in files:
        try:
            rel = path.relative_to(site)
        except ValueError:
            continue
        if rel.parts and not rel.parts[0].endswith(".dist-info") and rel.parts[0] != "bin":
            tops.add(rel.parts[0])
    return sorted(tops)


def _remove_distribution(site: Path, info: Path) -> None:
    site_resolved = site.resolve()
    for path in _record_files(site, info):
        try:
            path.relative_to(site_resolved)
        except ValueError:
            continue  # never delete outside the layer
        if path.is_file() or path.is_symlink():
            path.unlink()
    shutil.rmtree(info, ignore_errors=True)
    # Folders the removed files leave empty.
    for folder in sorted((p for p in site.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()


def _prune(site: Path, patterns: tuple[str, ...]) -> list[str]:
    removed = []
    for pattern in patterns:
        if pattern.startswith("**/"):
            leaf = pattern[3:]
            matches = [p for p in site.rglob("*") if fnmatch.fnmatch(p.name, leaf)]
        else:
            matches = list(site.glob(pattern))
        for path in sorted(matches, key=lambda p: len(p.parts)):
            if not path.exists() and not path.is_symlink():
                continue
            rel = path.relative_to(site).as_posix()
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            if not pattern.startswith("**/"):
                removed.append(rel)
        if pattern.startswith("**/") and matches:
            removed.append(f"{pattern} ({len(matches)})")
    return removed


def _elf_machine(path: Path) -> str | None:
    with open(path, "rb") as fh:
        head = fh.read(20)
    if head[:4] != b"\x7fELF":
        return None
    machine = int.from_bytes(head[18:20], "little")
    return {62: "x86_64", 183: "aarch64"}.get(machine, str(machine))


def _strip_tool(machine: str) -> str | None:
    host = _platform.machine().lower()
    for tool in ([f"{machine}-linux-gnu-strip"] + (["strip"] if machine == host else [])):
        if shutil.which(tool):
            return tool
    return None


def _strip(site: Path, machine: str) -> tuple[list[str], list[str]]:
    """strip --strip-unneeded on native libraries, where a strip for that machine exists.

    Libraries under a ``*.libs`` folder were grafted and rewritten (patchelf) by auditwheel;
    GNU strip can corrupt such files, so they are left alone. A strip that fails leaves the
    original in place.
    """
    stripped, skipped = [], []
    tool = _strip_tool(machine)
    for path in sorted(site.rglob("*.so*")):
        if not path.is_file() or path.is_symlink() or _elf_machine(path) is None:
            continue
        rel = path.relative_to(site).as_posix()
        if any(part.endswith(".libs") for part in path.relative_to(site).parts):
            skipped.append(f"{rel} (auditwheel-grafted)")
            continue
        if tool is None:
            skipped.append(f"{rel} (no strip for {machine} on this machine)")
            continue
        before = path.stat().st_size
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
            tmp_path = Path(tmp.name)
        try:
            shutil.copy2(path, tmp_path)
            result = subprocess.run([tool, "--strip-unneeded", str(tmp_path)], capture_output=True)
            if result.returncode == 0 and tmp_path.stat().st_size < before:
                os.replace(tmp_path, path)
                stripped.append(rel)
        finally:
            tmp_path.unlink(missing_ok=True)
    return stripped, skipped


@functools.lru_cache(maxsize=None)
def bytecode_compiler(python_version: str) -> tuple[str, str] | None:
    """(path, full version) of an interpreter of this Python version (e.g. "3.12") here, or None.

    A layer must carry the bytecode of the runtime's Python: Lambda's /opt is read-only, so an
    interpreter that finds no bytecode there compiles every module it imports from source, on every
    cold start, and cannot keep the result (numpy, pydantic, Powertools and the rest: a minilm cold
    start took ~820 ms instead of ~365, measured with Python 3.12 on this machine). Bytecode is
    specific to a minor version, so it is compiled by an interpreter of that version: this one, a
    `pythonX.Y` on PATH that really runs (pyenv's shims exist for versions not enabled) or a
    pyenv-installed one. Looked up once per process.
    """
    if "%d.%d" % sys.version_info[:2] == python_version:
        return sys.executable, _platform.python_version()
    name = f"python{python_version}"
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = [shutil.which(name), *sorted(str(p) for p in pyenv.glob(f"{python_version}.*/bin/{name}"))]
    candidates += [f"/usr/local/bin/{name}", f"/usr/bin/{name}"]
    for candidate in candidates:
        if not candidate or not os.access(candidate, os.X_OK):
            continue
        probe = subprocess.run([candidate, "-c", "import platform; print(platform.python_version())"],
                               capture_output=True, text=True)
        version = probe.stdout.strip()
        if probe.returncode == 0 and version.rsplit(".", 1)[0] == python_version:
            return candidate, version
    return None


def compile_bytecode(site: Path, compiler: tuple[str, str] | None, python_version: str) -> dict:
    """Every module's bytecode beside its source, as `unchecked-hash` .pyc files (PEP 552).

    Unchecked: Python loads them without comparing the source's timestamp or hash, which a zip
    round trip would not preserve (timestamps) and which a layer's immutable files do not need.
    A file that does not compile (none in the pinned wheels) is listed and left to compile at import.
    """
    if compiler is None:
        return {"python": None, "reason": f"no Python {python_version} interpreter on this machine: "
                                          "the layer's modules compile at every cold start"}
    python, version = compiler
    result = subprocess.run(
        [python, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash", str(site)],
        capture_output=True, text=True,
    )
    failed = sorted({line.split("'")[1] for line in result.stdout.splitlines() if line.startswith("*** Error compiling '")})
    written = [p.stat().st_size for p in site.rglob("*.pyc")]  # all of them: pruning left none before
    return {
        "python": version,
        "files": len(written),
        "bytes": sum(written),
        "failed": [Path(f).relative_to(site).as_posix() if Path(f).is_relative_to(site) else f for f in failed],
    }


def _pip_install(requirements: tuple[str, ...], target: Platform, dest: Path) -> None:
    command = [
        sys.executable, "-m", "pip", "install",
        "--quiet", "--disable-pip-version-check", "--no-compile", "--no-warn-script-location",
        "--only-binary=:all:",
        "--python-version", target.python_version,
        "--implementation", "cp",
        "--abi", target.abi_tag,
        "--target", str(dest),
    ]
    for tag in target.pip_platforms:
        command += ["--platform", tag]
    command += list(requirements)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise LayerError(
            f"pip could not install {' '.join(requirements)} for {target.name} "
            f"(Python {target.python_version}, {', '.join(target.pip_platforms)}); pip needs the package "
            f"index (or its cache) the first time a layer is built:\n{tail}"
        )


def build_layer(
    spec: LayerSpec,
    target: Platform,
    shared_root: Path,
    cache_dir: Path = CACHE_DIR,
    log=None,
) -> BuiltLayer:
    """The layer's folder for this platform: from the cache, or built now (a minute or so)."""
    shared_root = Path(shared_root)
    compiler = bytecode_compiler(target.python_version)
    key = layer_key(spec, target, shared_root, compiler[1] if compiler else None)
    folder = Path(cache_dir) / f"{spec.name}-{target.name}-cp{target.python_version.replace('.', '')}-{key}"
    if log and not (folder / REPORT_FILE).is_file():
        log(f"building the {spec.name} layer for {target.name} (Python {target.python_version}) into {folder}")

    def fill(work: Path) -> None:
        site = work / CONTENT_DIR
        _pip_install(spec.requirements, target, site)
        report = BuiltLayer(
            name=spec.name, platform=target.name, machine=target.machine, python_version=target.python_version,
            key=key, path="", requirements=list(spec.requirements), installed_bytes=folder_bytes(site),
        )
        keep = {_normalize(n) for n in spec.keep}
        for name, info in sorted(_distributions(site).items()):
            if name in keep:
                files = _record_files(site, info)
                report.kept[name] = {
                    "version": _version_of(info),
                    "top_level": _top_level(site, files),
                    "native": any(_elf_machine(p) for p in files if p.is_file() and ".so" in p.name),
                }
            else:
                report.dropped[name] = _version_of(info)
                _remove_distribution(site, info)
        missing = keep - set(report.kept)
        if missing:
            raise LayerError(f"the {spec.name} layer lacks {', '.join(sorted(missing))} after pip install")
        for package in spec.local_packages:
            source = shared_root / package
            if not (source / "__init__.py").is_file():
                raise LayerError(f"shared package {source} not found")
            shutil.copytree(source, site / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            report.local_packages[package] = tree_hash(source)
        report.pruned = _prune(site, spec.prune)
        report.stripped, report.not_stripped = _strip(site, target.machine)
        report.bytecode = compile_bytecode(site, compiler, target.python_version)
        if log and report.bytecode["python"] is None:
            log(f"  {spec.name} layer: {report.bytecode['reason']}")
        report.unzipped_bytes = folder_bytes(site)
        (work / REPORT_FILE).write_text(json.dumps(asdict(report), indent=2, sort_keys=True))

    materialize(folder, fill, keep=CACHE_KEEP)
    return BuiltLayer.read(folder)


def build_layers(architecture: str, shared_root: Path, cache_dir: Path = CACHE_DIR, log=None) -> dict[str, BuiltLayer]:
    """Every layer, for one Lambda architecture."""
    target = platform_for(architecture)
    return {name: build_layer(spec, target, shared_root, cache_dir, log) for name, spec in LAYERS.items()}


def host_layers(shared_root: Path, cache_dir: Path = CACHE_DIR, log=None) -> dict[str, BuiltLayer]:
    """Every layer, built the same way for this machine (to run layer code here)."""
    target = host_platform()
    return {name: build_layer(spec, target, shared_root, cache_dir, log) for name, spec in LAYERS.items()}
