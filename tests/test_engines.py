"""Engines: every backend available here matches torch fp32 on the probe and on observations it
has not seen; selection says what ran and why; the engine lifecycle and input checks.

Budget: one reference bundle with every backend this machine can build, for the module (about
10-15 s on 2 cores, mostly the ONNX export); 8 held-out observations x 2 modes per backend.
ONNX tests skip where onnxruntime is missing, TensorRT ones where torch-tensorrt/TensorRT is, each
with the reason the registry gives.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import warnings

import numpy as np
import pytest

from models.export import JointStats, synthetic_observations
from models.reference import build_reference_bundle
from ramp_edge.bundle import BundleError, load_bundle
from ramp_edge.engines import (
    BACKENDS,
    Engine,
    EngineClosedError,
    EngineError,
    EngineOptions,
    EngineUnavailableError,
    Observation,
    ObservationError,
    backend_status,
    engine_class,
    open_engine,
    select_engine,
)

JOINTS = ("shoulder_pan", "shoulder_lift", "elbow", "wrist_flex", "wrist_roll", "wrist_pitch",
          "gripper")
LIMITS = [(-2.8, 2.8)] * 6 + [(0.0, 0.04)]
SPAN = np.array([b - a for a, b in LIMITS], dtype=np.float64)
ONE_THREAD = EngineOptions(threads=1)
FP32 = ("torch-export", "onnx-fp32")


def skip_unless_available(backend: str) -> None:
    reason = backend_status(backend)
    if reason is not None:
        pytest.skip(f"{backend} unavailable here: {reason}")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    path = build_reference_bundle(tmp_path_factory.mktemp("engines") / "reference", JOINTS,
                                  seed=0, joint_limits=LIMITS)
    return load_bundle(path)


@pytest.fixture(scope="module")
def held_out(bundle):
    """Observations none of the export steps saw (calibration used seed 1, accuracy seed 2)."""
    from models.language import Tokenizer

    obs = synthetic_observations(8, camera_names=bundle.camera_names, image_shape=(96, 96, 3),
                                 joints=JointStats.from_limits(JOINTS, LIMITS),
                                 tokenizer=Tokenizer(), seed=1234)
    return obs


@pytest.fixture(scope="module")
def reference_outputs(bundle, held_out):
    with open_engine(bundle, "torch-eager", ONE_THREAD) as eng:
        return [(eng.predict(o, m), o, m) for o in held_out for m in ("standard", "efficient")]


# --------------------------------------------------------------------------- per backend


@pytest.mark.parametrize("backend", ["torch-eager", "torch-export", "onnx-fp32", "onnx-int8"])
def test_when_backend_opens_expect_probe_verified_and_chunk_shaped_output(bundle, backend):
    skip_unless_available(backend)
    if backend not in bundle.backends:
        pytest.fail(f"{backend} is available but was not built: "
                    f"{bundle.manifest.raw.get('skipped_backends')}")
    with open_engine(bundle, backend, ONE_THREAD) as eng:  # open_engine runs the probe
        obs = bundle.probe_observation()
        std = eng.predict(obs, "standard")
        eff = eng.predict(obs, mode="efficient")
    for pred in (std, eff):
        assert pred.actions.dtype == np.float32 and pred.actions.shape == (50, 7)
        assert np.all(np.isfinite(pred.actions)) and pred.latency_ms > 0
    assert std.value is not None and -1.0 < std.value < 0.0
    assert eff.value is None  # the world model did not run
    assert not np.allclose(std.actions, eff.actions)  # z tokens vs the learned mask token


@pytest.mark.parametrize("backend", FP32)
def test_when_fp32_backend_runs_unseen_observations_expect_torch_fp32_outputs(
        bundle, reference_outputs, backend):
    skip_unless_available(backend)
    std = bundle.normalization.action_std
    with open_engine(bundle, backend, ONE_THREAD, verify=False) as eng:
        for ref, obs, mode in reference_outputs:
            got = eng.predict(obs, mode)
            assert np.max(np.abs(got.actions - ref.actions) / std) < 1e-4
            if ref.value is not None:
                assert got.value == pytest.approx(ref.value, abs=1e-5)


def test_when_int8_runs_unseen_observations_expect_cosine_099_and_error_under_1pct_of_range(
        bundle, reference_outputs):
    skip_unless_available("onnx-int8")
    norm = bundle.normalization
    worst_frac, worst_cos = 0.0, 1.0
    with open_engine(bundle, "onnx-int8", ONE_THREAD, verify=False) as eng:
        for ref, obs, mode in reference_outputs:
            got = eng.predict(obs, mode)
            a = (got.actions - norm.action_mean) / norm.action_std
            b = (ref.actions - norm.action_mean) / norm.action_std
            worst_cos = min(worst_cos, float(np.sum(a * b) / np.linalg.norm(a) /
                                             np.linalg.norm(b)))
            worst_frac = max(worst_frac, float(np.max(np.abs(got.actions - ref.actions) /
                                                      SPAN)))
            if ref.value is not None:
                assert got.value == pytest.approx(ref.value, abs=0.01)
    # Measured on this reference bundle: about 0.9998 and 0.6-0.7% of range.
    assert worst_cos >= 0.99, f"INT8 action cosine similarity {worst_cos:.4f}"
    assert worst_frac < 0.01, f"INT8 largest action error {100 * worst_frac:.2f}% of range"
    recorded = bundle.manifest.accuracy["onnx-int8"]
    assert recorded["actions_max_abs_err_frac_range"] < 0.01
    assert recorded["actions_cosine_min"] >= 0.99


@pytest.mark.parametrize("backend", ["tensorrt-fp16", "tensorrt-int8"])
def test_when_tensorrt_is_present_expect_probe_verified_else_skip_with_reason(bundle, backend):
    reason = backend_status(backend)
    if reason is not None:
        assert "torch_tensorrt" in reason or "CUDA" in reason or "modelopt" in reason
        pytest.skip(f"{backend} unavailable here: {reason}")
    if backend not in bundle.backends:
        pytest.skip(f"the reference bundle does not ship {backend}")
    with open_engine(bundle, backend) as eng:  # compiles on the GPU, then the probe
        pred = eng.predict(bundle.probe_observation())
    assert pred.actions.shape == (50, 7) and np.all(np.isfinite(pred.actions))


# --------------------------------------------------------------------------- selection


def test_when_nothing_preferred_expect_best_available_and_reasons_for_the_rest(bundle):
    engine, message = select_engine(bundle, options=ONE_THREAD)
    with engine:
        best = "onnx-int8" if backend_status("onnx-int8") is None else "torch-export"
        assert engine.backend == best
        assert message.startswith(f"engine {best} (") and "probe verified" in message
        if backend_status("tensorrt-fp16") is not None:
            assert "skipped tensorrt-fp16: backend tensorrt-fp16 is unavailable: " in message


def test_when_a_backend_is_preferred_expect_it_and_fallback_when_it_cannot_run(bundle):
    engine, message = select_engine(bundle, "torch-eager", ONE_THREAD)
    with engine:
        assert engine.backend == "torch-eager" and "(preferred, probe verified)" in message
    engine, message = select_engine(bundle, ["tensorrt-int8", "torch-export"], ONE_THREAD)
    with engine:
        assert engine.backend == "torch-export"
        assert "skipped tensorrt-int8: not in this bundle" in message
    with pytest.raises(EngineUnavailableError, match="tensorrt-int8: not in this bundle"):
        select_engine(bundle, "tensorrt-int8", fallback=False)


def test_when_backend_is_unknown_expect_unavailable_naming_the_known_ones(bundle):
    with pytest.raises(EngineUnavailableError, match=r"unknown backend 'tflite'.*torch-eager"):
        engine_class("tflite")
    assert "unknown backend" in backend_status("tflite")
    assert all(isinstance(v, str) and ":" in v for v in BACKENDS.values())  # data, not code


def test_when_engines_package_is_imported_expect_no_optional_runtime_imported():
    code = ("import sys, ramp_edge.engines; "
            "bad = [m for m in ('onnxruntime', 'torch_tensorrt', 'torch') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


# --------------------------------------------------------------------------- lifecycle, inputs


def test_when_closed_expect_idempotent_and_predict_refused(bundle):
    eng = open_engine(bundle, "torch-eager", ONE_THREAD, verify=False)
    eng.close()
    eng.close()
    assert eng.closed
    with pytest.raises(EngineClosedError):
        eng.predict(bundle.probe_observation())


def test_when_engine_dropped_unclosed_expect_resource_warning(bundle):
    eng = open_engine(bundle, "torch-eager", ONE_THREAD, verify=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del eng
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in caught)


def test_when_observation_does_not_match_expect_observation_error_naming_it(bundle):
    good = bundle.probe_observation()
    with open_engine(bundle, "torch-eager", ONE_THREAD, verify=False) as eng:
        bad_cams = Observation({"scene": good.images["scene"]}, good.joint_position,
                               good.joint_velocity, good.tokens)
        with pytest.raises(ObservationError, match=r"cameras \['scene'\]"):
            eng.predict(bad_cams)
        small = dict(good.images, wrist=np.zeros((48, 48, 3), np.uint8))
        with pytest.raises(ObservationError, match="image 'wrist' is uint8 \\(48, 48, 3\\)"):
            eng.predict(Observation(small, good.joint_position, good.joint_velocity,
                                    good.tokens))
        with pytest.raises(ObservationError, match="joint_velocity"):
            eng.predict(Observation(good.images, good.joint_position, np.zeros(6, np.float32),
                                    good.tokens))
        with pytest.raises(ObservationError, match="tokens"):
            eng.predict(Observation(good.images, good.joint_position, good.joint_velocity,
                                    good.tokens[:5]))
        with pytest.raises(ValueError, match="mode"):
            eng.predict(good, mode="fast")  # type: ignore[arg-type]


def test_when_backend_raises_its_own_error_expect_engine_error_with_cause(bundle):
    class Broken(Engine):
        backend = "torch-eager"

        def _run(self, graph, inputs):
            raise RuntimeError("kernel exploded")

    with Broken(bundle) as eng, pytest.raises(EngineError, match="kernel exploded") as info:
        eng.predict(bundle.probe_observation())
    assert isinstance(info.value.__cause__, RuntimeError)


def test_when_bundle_lacks_the_backend_expect_bundle_error(tmp_path):
    small = load_bundle(build_reference_bundle(tmp_path / "b", JOINTS[:2], seed=3,
                                               backends=["torch-eager"]))
    with pytest.raises(BundleError, match="has no backend 'torch-export'"):
        open_engine(small, "torch-export")
