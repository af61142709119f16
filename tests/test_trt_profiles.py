"""Optimisation profiles from TensorSpecs and recipes, build planning per TensorRT version, ORT GPU options.

All of this runs without TensorRT or a GPU.
"""

from __future__ import annotations

import json

import pytest

from abaw_rt.checkpoint import CheckpointHeader
from abaw_rt.engines.builder import BuildConfig, plan_build
from abaw_rt.engines.recipes import EngineRecipe, available_recipes, load_engine_recipe
from abaw_rt.errors import AbawRtError
from abaw_rt.graphs.metadata import info_from_props, metadata_props
from abaw_rt.model.config import PRESET_FEATURES, TINY, preset
from abaw_rt.trt.compat import TrtVersion, check_supported
from abaw_rt.trt.profiles import (
    AxisRange,
    ProfileSpec,
    default_profiles,
    fits_any,
    select_profile,
    validate_profiles,
)

TRT10 = TrtVersion.parse("10.13.3.9")
TRT11 = TrtVersion.parse("11.4.0.106")


def onnx_info(precision: str = "fp16", name: str = "va", window: int = 300):
    header = CheckpointHeader(config=preset(name, **TINY), normalization=None, window=window, stride=window // 2 + 1)
    return info_from_props(metadata_props(header, precision, "c" * 64, "0.0.0"), "model.onnx")


# -- profiles from specs ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PRESET_FEATURES))
def test_profile_shapes_follow_every_input_spec(name):
    cfg = preset(name)
    p = ProfileSpec("window", AxisRange(1, 8, 16), AxisRange(1, 300, 300))
    shapes = p.shapes(cfg.input_specs())
    assert set(shapes) == {s.name for s in cfg.input_specs()}
    for m in cfg.modalities:
        dim = cfg.modality_dim(m)
        assert shapes[m] == ((1, 1, dim), (8, 300, dim), (16, 300, dim))
    assert shapes["lengths"] == ((1,), (8,), (16,))


def test_profile_refuses_an_axis_it_has_no_range_for():
    from abaw_rt.specs import TensorSpec

    p = ProfileSpec("x", AxisRange(1, 1, 1), AxisRange(1, 1, 1))
    with pytest.raises(AbawRtError, match="symbolic axis 'channels' has no range"):
        p.shapes([TensorSpec("video", "float32", ("batch", "channels"))])


@pytest.mark.parametrize("bad", [(0, 1, 2), (2, 1, 3), (1, 3, 2), (1.5, 2, 3)])
def test_axis_range_rejects_bad_orders(bad):
    with pytest.raises(AbawRtError, match="min <= opt <= max"):
        AxisRange(*bad)


def test_cli_profile_round_trip_and_errors():
    p = ProfileSpec.parse("live:1,1,4:1,75,300")
    assert p == ProfileSpec("live", AxisRange(1, 1, 4), AxisRange(1, 75, 300))
    assert ProfileSpec.parse(p.cli()) == p
    assert ProfileSpec.parse("fixed:2:300").batch == AxisRange(2, 2, 2)
    for bad, match in [("live:1,1,4", "NAME:BMIN"), (":1,1,1:1,1,1", "NAME:BMIN"), ("a:1,2:1,1,1", "three integers"),
                       ("a:x,1,1:1,1,1", "MIN,OPT,MAX integers"), ("a:4,1,1:1,1,1", "batch axis range")]:  # fmt: skip
        with pytest.raises(AbawRtError, match=match):
            ProfileSpec.parse(bad)


@pytest.mark.parametrize("window", [1, 7, 300])
def test_default_profiles_cover_one_to_window_and_twice_it(window):
    profiles = validate_profiles(default_profiles(window), window)
    for t in (1, window, 2 * window):
        assert fits_any(profiles, 1, t) and fits_any(profiles, 4, t)


def test_validate_refuses_gaps_short_ranges_duplicates_and_nothing():
    short = ProfileSpec("short", AxisRange(1, 1, 4), AxisRange(1, 75, 100))
    late = ProfileSpec("late", AxisRange(1, 1, 4), AxisRange(150, 300, 300))
    with pytest.raises(AbawRtError, match=r"cover 1\.\.100 only, expected at least 1\.\.300"):
        validate_profiles([short, late], 300)
    assert validate_profiles([short, ProfileSpec("rest", AxisRange(1, 1, 4), AxisRange(101, 300, 300))], 300)
    with pytest.raises(AbawRtError, match="duplicate profile names"):
        validate_profiles([short, short], 100)
    with pytest.raises(AbawRtError, match="at least one"):
        validate_profiles([], 300)


def test_select_profile_picks_the_tightest_and_refuses_outside():
    profiles = (
        ProfileSpec("window", AxisRange(1, 32, 64), AxisRange(1, 300, 300)),
        ProfileSpec("live", AxisRange(1, 1, 4), AxisRange(1, 75, 300)),
        ProfileSpec("long", AxisRange(1, 8, 64), AxisRange(300, 1200, 1200)),
    )
    assert select_profile(profiles, 1, 75) == 1  # live and window both fit: live is tighter
    assert select_profile(profiles, 8, 300) == 0
    assert select_profile(profiles, 8, 301) == 2
    with pytest.raises(
        AbawRtError, match=r"batch 65, time 300 is outside every optimisation profile.*live: batch 1\.\.4"
    ):
        select_profile(profiles, 65, 300)
    with pytest.raises(AbawRtError, match="time 1201"):
        select_profile(profiles, 1, 1201)


# -- recipes ----------------------------------------------------------------------------------------------
def test_shipped_recipes_load_and_cover_a_window():
    names = available_recipes()
    assert {"jetson-orin", "t4-a10", "h100"} <= set(names)
    for name in names:
        r = load_engine_recipe(name)
        validate_profiles(r.profiles, 300, name)
        assert r.workspace_mib and 0 <= r.optimization_level <= 5
        for preset_name in PRESET_FEATURES:  # shapes derive for every preset's inputs
            for p in r.profiles:
                p.shapes(preset(preset_name).input_specs())
        assert EngineRecipe.from_dict(r.to_dict(), name) == r


def test_h100_recipe_covers_the_gpu_benchmark_grid():
    r = load_engine_recipe("h100")
    for b in (1, 8, 64):
        for t in (75, 300, 1200):
            assert fits_any(r.profiles, b, t), (b, t)


def test_recipe_errors(tmp_path):
    with pytest.raises(AbawRtError, match="known recipes: .*h100"):
        load_engine_recipe("no-such-gpu")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AbawRtError, match="not readable JSON"):
        load_engine_recipe(bad)
    good = load_engine_recipe("h100").to_dict()
    for change, match in [
        ({"format": "x"}, "format 'x'"),
        ({"profiles": []}, "non-empty list"),
        ({"optimization_level": 9}, "optimization_level 9"),
        ({"workspace_mib": 0}, "workspace_mib 0"),
        ({"profiles": [{"name": "a", "batch": [1, 1, 1]}]}, "lacks 'time'"),
    ]:
        bad.write_text(json.dumps({**good, **change}))
        with pytest.raises(AbawRtError, match=match):
            load_engine_recipe(bad)


def test_cli_options_override_the_recipe():
    from abaw_rt.cli.engine_cmds import build_config

    cfg = build_config(recipe="h100")
    assert cfg.recipe == "h100" and cfg.profiles == load_engine_recipe("h100").profiles
    assert cfg.workspace_mib == load_engine_recipe("h100").workspace_mib
    cfg = build_config(recipe="h100", profile=["only:1,1,2:1,300,300"], workspace_mib=64, opt_level=5)
    assert cfg.recipe is None  # the profiles are no longer the recipe's
    assert [p.name for p in cfg.profiles] == ["only"] and cfg.workspace_mib == 64 and cfg.optimization_level == 5
    assert build_config() == BuildConfig()


# -- how each TensorRT version builds each precision ---------------------------------------------------------
def test_build_plan_per_version():
    # TensorRT 11: strongly typed only; fp16 comes from the fp16 graph.
    assert plan_build("fp16", "fp16", TRT11) == plan_build("fp16", "fp16", TRT10)
    p = plan_build("fp16", "fp16", TRT11)
    assert p.strongly_typed and not p.fp16_flag and p.precision == "fp16"
    with pytest.raises(AbawRtError, match=r"strongly typed networks only.*abaw-rt export CHECKPOINT -p fp16"):
        plan_build("fp32", "fp16", TRT11)
    assert plan_build("fp32", "fp32", TRT11).strongly_typed
    # TensorRT 10: an fp32 graph with the FP16 flag and FP32 constraints.
    p = plan_build("fp32", "fp16", TRT10)
    assert p.fp16_flag and p.constrain_fp32 and not p.strongly_typed
    assert not plan_build("fp32", "fp32", TRT10).fp16_flag
    for v in (TRT10, TRT11):
        with pytest.raises(AbawRtError, match="fp32 engine needs the fp32 graph"):
            plan_build("fp16", "fp32", v)


def test_versions():
    assert TrtVersion.parse("10.13.3.9") < TrtVersion.parse("10.13.3.10") < TRT11
    assert str(TrtVersion.parse("11.4")) == "11.4.0.0" and TRT11.strongly_typed_only and not TRT10.strongly_typed_only
    assert check_supported(TRT10) and check_supported(TRT11)
    with pytest.raises(AbawRtError, match="supports TensorRT 10.x and 11.x"):
        check_supported(TrtVersion.parse("8.6.1"))
    with pytest.raises(AbawRtError, match="expected a version"):
        TrtVersion.parse("latest")


# -- onnxruntime's GPU providers ------------------------------------------------------------------------------
def test_ort_tensorrt_options_carry_explicit_profiles(tmp_path):
    from abaw_rt.runners.ort_runner import gpu_provider_options

    info = onnx_info("fp32")
    profiles = (ProfileSpec("a", AxisRange(1, 2, 4), AxisRange(1, 75, 300)),
                ProfileSpec("b", AxisRange(1, 1, 2), AxisRange(300, 600, 1200)))  # fmt: skip
    opts = gpu_provider_options("tensorrt", info, profiles, fp16=True, cache_dir=tmp_path / "cache", workspace_mib=512)
    dims = {s.name: s.shape[2] for s in info.inputs if len(s.shape) == 3}
    v, a = dims["visual"], dims["audio"]
    assert (
        opts["trt_profile_min_shapes"]
        == f"visual:1x1x{v},audio:1x1x{a},lengths:1,visual:1x300x{v},audio:1x300x{a},lengths:1"
    )
    assert opts["trt_profile_max_shapes"].endswith(f"visual:2x1200x{v},audio:2x1200x{a},lengths:2")
    assert opts["trt_fp16_enable"] == "True" and opts["trt_layer_norm_fp32_fallback"] == "True"
    assert opts["trt_engine_cache_path"] == str(tmp_path / "cache") and (tmp_path / "cache").is_dir()
    assert opts["trt_max_workspace_size"] == str(512 << 20)
    # An fp16 graph is built from its own types: no FP16 flag.
    assert gpu_provider_options("tensorrt", onnx_info("fp16"), fp16=True)["trt_fp16_enable"] == "False"
    assert gpu_provider_options("cuda", info)["use_tf32"] == "0"
    with pytest.raises(AbawRtError, match="'cuda' and 'tensorrt'"):
        gpu_provider_options("cpu", info)
