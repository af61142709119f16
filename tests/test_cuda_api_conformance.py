"""Every CUDA API name the device layer (abaw_rt/cuda) uses exists in the real bindings it runs on.

No GPU here. Three sets of names, each collected from our sources' AST (a new call is checked
without editing this test):

- cuda-python: every attribute chain on ``cudart`` (``cuda.bindings.runtime``) in
  ``abaw_rt/cuda/cuda_python.py`` (``cudart.cudaMemcpyKind.cudaMemcpyHostToDevice``) is resolved with
  ``getattr`` on the installed ``cuda-bindings`` (its import needs no driver).
- the driver through ctypes (``lib.cu*`` in gpu.py, ``self._driver.cu*`` in pycuda_api.py): each symbol
  must be one that ``cuda-bindings`` itself loads from libcuda (its ``_internal/driver`` extension names
  them, versioned ABI names such as ``cuDeviceTotalMem_v2`` included); the raw enum values we pass are
  compared with cuda-bindings' enums.
- PyCUDA (``pycuda.driver`` in pycuda_api.py): PyCUDA ships as a source archive that needs the CUDA
  toolkit to build, so its names are read from the sdist (``pycuda==PYCUDA``, downloaded once with
  ``pip download --no-build-isolation`` into the bindings cache): ``pycuda/driver.py``'s Python names
  and the identifiers ``src/wrapper/wrap_cudadrv.cpp`` exports to Python.

Without cuda-bindings installed (``pip install cuda-bindings``, in the ``[dev]`` extra) or without the
sdist offline, the tests skip, unless ``ABAW_RT_REQUIRE_TRT_BINDINGS=1`` (set by ``.ci/run``).
"""

from __future__ import annotations

import ast
import importlib
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.test_trt_api_conformance import REQUIRED, ROOT, _init_names, cached_download

PYCUDA = "2026.1"
CUDA_PYTHON = "abaw_rt/cuda/cuda_python.py"
PYCUDA_API = "abaw_rt/cuda/pycuda_api.py"
DRIVER_MODULES = ("abaw_rt/cuda/gpu.py", PYCUDA_API)


@dataclass(frozen=True)
class Use:
    path: tuple[str, ...]  # attribute chain after the root: ("cudaMemcpyKind", "cudaMemcpyHostToDevice")
    where: str
    on_root: bool = True  # on a declared root (the module); False: on what a call returned or a name assigned from it

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def collect_chains(source: str, where: str, roots: set[str]) -> list[Use]:
    """Attribute chains on a root (a name or ``self.x``), also through calls and names assigned from one.

    ``x = cudart.f()`` makes ``x`` a root too; ``cuda.Device(0).retain_primary_context()`` gives
    ``("Device",)`` and ``("retain_primary_context",)`` (what a call returns is checked by name only).
    """
    declared, roots = set(roots), set(roots)
    uses: list[Use] = []

    def rooted(node: ast.AST) -> bool:
        if _dotted(node) in roots:
            return True
        if isinstance(node, ast.Attribute):
            return rooted(node.value)
        if isinstance(node, (ast.Call, ast.Subscript)):
            return rooted(node.func if isinstance(node, ast.Call) else node.value)
        return False

    def chain(node: ast.Attribute) -> tuple[tuple[str, ...], bool]:
        parts = [node.attr]
        value = node.value
        while isinstance(value, ast.Attribute) and _dotted(value) not in roots:
            parts.append(value.attr)
            value = value.value
        if _dotted(value) in roots:
            return tuple(reversed(parts)), _dotted(value) in declared
        return (node.attr,), False

    def visit(node: ast.AST, inside_chain: bool = False) -> None:
        if isinstance(node, ast.Assign) and rooted(node.value):
            roots.update(d for t in node.targets if (d := _dotted(t)))
        is_use = isinstance(node, ast.Attribute) and rooted(node.value) and _dotted(node) not in roots
        if is_use and not inside_chain and not isinstance(node.ctx, ast.Store):
            path, on_root = chain(node)
            uses.append(Use(path, f"{where}:{node.lineno}", on_root))
        for child in ast.iter_child_nodes(node):
            visit(child, inside_chain=is_use and isinstance(child, ast.Attribute))

    visit(ast.parse(source))
    return uses


def uses_in(rel: str, roots: set[str]) -> list[Use]:
    return collect_chains((ROOT / rel).read_text(), rel, roots)


@pytest.fixture(scope="module")
def cudart():
    try:
        return importlib.import_module("cuda.bindings.runtime")
    except ImportError as exc:
        if REQUIRED:
            pytest.fail(f"cuda-bindings is not installed ({exc}); pip install cuda-bindings")
        pytest.skip(f"cuda-bindings is not installed ({exc})")


@pytest.fixture(scope="module")
def driver_symbols(cudart) -> frozenset[str]:
    """The libcuda symbols cuda-bindings resolves (NUL-terminated names in its driver loader extension)."""
    folder = Path(cudart.__file__).parent / "_internal"
    blobs = [p.read_bytes() for p in folder.glob("driver*.so")] + [p.read_bytes() for p in folder.glob("driver*.pyd")]
    assert blobs, f"no driver loader extension under {folder}"
    return frozenset(m.decode() for b in blobs for m in re.findall(rb"(cu[A-Z][A-Za-z0-9_]*)\x00", b))


@pytest.fixture(scope="module")
def pycuda_names() -> frozenset[str]:
    sdist = cached_download(f"pycuda=={PYCUDA}", f"pycuda-{PYCUDA}.tar.gz", ("--no-build-isolation", "--no-binary", ":all:"))
    with tarfile.open(sdist) as tar:
        files = {Path(m.name).relative_to(Path(m.name).parts[0]).as_posix(): m for m in tar.getmembers() if m.isfile()}
        driver_py = tar.extractfile(files["pycuda/driver.py"]).read().decode()
        wrapper = tar.extractfile(files["src/wrapper/wrap_cudadrv.cpp"]).read().decode()
    exported = set(re.findall(r'"([A-Za-z_][A-Za-z0-9_]*)"', wrapper))  # .def("name"), py::class_<..>("Name")
    exported |= set(re.findall(r"(?:DEF_SIMPLE_(?:FUNCTION|METHOD|RO_MEMBER)\w*|DECLARE_EXC)\(\s*([A-Za-z_]\w*)", wrapper))
    return frozenset(exported | _init_names(driver_py))


# -- cuda-python ----------------------------------------------------------------------------------------
def test_every_cudart_name_resolves_on_the_installed_cuda_bindings(cudart):
    uses = [u for u in uses_in(CUDA_PYTHON, {"cudart", "self.cudart"}) if u.on_root]  # not e.g. bytes.decode
    problems = []
    for u in uses:
        obj = cudart
        for i, part in enumerate(u.path):
            if not hasattr(obj, part):
                problems.append(f"{u.where}: cudart.{'.'.join(u.path[: i + 1])} does not exist in cuda-bindings")
                break
            obj = getattr(obj, part)
    assert not problems, "\n".join(problems)
    seen = {u.dotted for u in uses}  # guards against a collector that silently checks nothing
    core = {"cudaMalloc", "cudaFree", "cudaHostAlloc", "cudaMemcpyAsync", "cudaStreamBeginCapture",
            "cudaGraphInstantiate", "cudaGraphLaunch", "cudaError_t.cudaSuccess",
            "cudaMemcpyKind.cudaMemcpyDeviceToHost"}  # fmt: skip
    assert core <= seen, f"not collected: {sorted(core - seen)}"


# -- the driver through ctypes --------------------------------------------------------------------------
def test_every_ctypes_driver_symbol_is_one_cuda_bindings_loads(driver_symbols):
    uses = [u for rel in DRIVER_MODULES for u in uses_in(rel, {"lib", "self._driver"}) if u.on_root]
    problems = [f"{u.where}: libcuda has no '{u.dotted}'" for u in uses if u.dotted not in driver_symbols]
    assert not problems, "\n".join(problems)
    seen = {u.dotted for u in uses}
    assert {"cuInit", "cuDeviceTotalMem_v2", "cuStreamBeginCapture_v2", "cuGraphInstantiateWithFlags"} <= seen
    assert "cuStreamBeginCapture_v9" not in driver_symbols and "cuDeviceGet" in driver_symbols


def test_raw_driver_enum_values_match_cuda_bindings(cudart):
    drv = importlib.import_module("cuda.bindings.driver")
    import abaw_rt.cuda.gpu as gpu
    import abaw_rt.cuda.pycuda_api as pycuda_api

    attr = drv.CUdevice_attribute
    assert gpu._CC_MAJOR == int(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
    assert gpu._CC_MINOR == int(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
    mode = drv.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
    assert pycuda_api._CAPTURE_MODE_THREAD_LOCAL == int(mode)


# -- PyCUDA ---------------------------------------------------------------------------------------------
def test_every_pycuda_name_exists_in_pycuda(pycuda_names):
    uses = uses_in(PYCUDA_API, {"cuda", "self.cuda", "stream"})
    problems = [f"{u.where}: '{part}' is not in pycuda {PYCUDA}" for u in uses for part in u.path
                if part not in pycuda_names]  # fmt: skip
    assert not problems, "\n".join(problems)
    seen = {p for u in uses for p in u.path}
    core = {"init", "Device", "retain_primary_context", "push", "Error", "mem_alloc", "pagelocked_empty", "Stream",
            "memcpy_htod_async", "memcpy_dtoh_async", "memcpy_dtod_async", "handle", "synchronize"}  # fmt: skip
    assert core <= seen, f"not collected: {sorted(core - seen)}"
    assert "memcpy_htod_async_v2" not in pycuda_names  # the name list can say no


def test_the_collector_follows_roots_calls_and_assignments():
    src = """
def f(self, cudart):
    x = cudart.cudaStreamCreate()
    x.handle
    cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
    self.cudart.cudaFree(0)
    cuda.Device(0).retain_primary_context().push()
    other.cudaMalloc
"""
    got = {(u.dotted, u.on_root) for u in collect_chains(src, "s.py", {"cudart", "self.cudart", "cuda"})}
    assert got == {("cudaStreamCreate", True), ("handle", False), ("cudaMemcpyKind.cudaMemcpyHostToDevice", True),
                   ("cudaFree", True), ("Device", True), ("retain_primary_context", False), ("push", False)}  # fmt: skip
