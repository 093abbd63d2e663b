"""Model bundles: round trip, atomic writing, and one clear refusal for each kind of bad bundle.

Budget: one torch-only reference bundle for the module (a second and third only for the
reproducibility test), each about a second or two to build; every tampering test works on a copy.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from models.language import BOS_ID, PAD_ID, Tokenizer
from models.reference import build_reference_bundle
from ramp_edge.bundle import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    BundleError,
    BundleWriter,
    load_bundle,
)
from ramp_edge.engines import EngineUnavailableError, open_engine, select_engine
from ramp_edge.errors import EdgeError

JOINTS = ("shoulder_pan", "shoulder_lift", "elbow", "wrist_flex", "wrist_roll", "wrist_pitch",
          "gripper")
LIMITS = [(-2.8, 2.8)] * 6 + [(0.0, 0.04)]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "reference"
    return build_reference_bundle(out, JOINTS, seed=0, joint_limits=LIMITS,
                                  backends=["torch-eager"])


@pytest.fixture
def copy(built, tmp_path) -> Path:
    """A private copy of the built bundle, for tests that damage it."""
    return Path(shutil.copytree(built, tmp_path / "bundle"))


def rehash(path: Path) -> None:
    """Rewrite the manifest's hashes to match the files (a bundle consistent on disk whose
    content is nevertheless wrong, as a buggy exporter would write)."""
    m = json.loads((path / MANIFEST_NAME).read_text())
    for rel in m["artifacts"]:
        data = (path / rel).read_bytes()
        m["artifacts"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    (path / MANIFEST_NAME).write_text(json.dumps(m))


def edit_manifest(path: Path, edit) -> None:
    m = json.loads((path / MANIFEST_NAME).read_text())
    edit(m)
    (path / MANIFEST_NAME).write_text(json.dumps(m))


def refused(path: Path) -> str:
    with pytest.raises(BundleError) as info:
        load_bundle(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


# --------------------------------------------------------------------------- round trip


def test_when_reference_bundle_loaded_expect_its_manifest_and_a_verified_probe(built):
    bundle = load_bundle(built)
    m = bundle.manifest
    assert bundle.joint_names == JOINTS
    assert bundle.camera_names == ("scene", "wrist")
    assert bundle.chunk_size == 50 and bundle.n_joints == 7
    assert bundle.backends == ("torch-eager",)
    assert not bundle.trained and m.provenance["kind"] == "random init, untrained"
    assert m.provenance["seed"] == 0 and "ramp-edge" in m.provenance["code_version"]
    assert bundle.sha256 == hashlib.sha256((built / MANIFEST_NAME).read_bytes()).hexdigest()
    # Normalisation from the limits: mid-range, range / 4; actions are absolute targets.
    np.testing.assert_allclose(m.normalization.position_mean[:6], 0.0)
    np.testing.assert_allclose(m.normalization.position_std[6], 0.01, rtol=1e-6)
    np.testing.assert_allclose(m.normalization.action_mean[6], 0.02, rtol=1e-6)
    assert [s.name for s in m.inputs] == ["image_scene", "image_wrist", "joint_position",
                                          "joint_velocity", "tokens"]
    assert m.outputs[0].shape == (50, 7) and m.outputs[1].shape == ()
    assert bundle.tokenizer() == Tokenizer()

    with open_engine(bundle, "torch-eager") as engine:  # verifies the probe on open
        report = bundle.verify(engine)
    assert report.reference == "torch-eager"
    assert max(report.actions_err.values()) <= 1e-4 and report.value_err <= 1e-5


def test_when_probe_observation_run_expect_recorded_output(built):
    bundle = load_bundle(built)
    expected, value = bundle.probe_expected("torch-eager", "standard")
    with open_engine(bundle, "torch-eager", verify=False) as engine:
        pred = engine.predict(bundle.probe_observation())
    assert pred.actions.dtype == np.float32 and pred.actions.shape == (50, 7)
    np.testing.assert_allclose(pred.actions, expected, atol=1e-5)  # thread-count rounding
    assert -1.0 < pred.value < 0.0 and pred.value == pytest.approx(value, abs=1e-5)


def test_when_built_twice_with_one_seed_expect_identical_weights_and_probe(built, tmp_path):
    again = build_reference_bundle(tmp_path / "again", JOINTS, seed=0, joint_limits=LIMITS,
                                   backends=["torch-eager"])
    other = build_reference_bundle(tmp_path / "other", JOINTS, seed=1, joint_limits=LIMITS,
                                   backends=["torch-eager"])
    a, b, c = load_bundle(built), load_bundle(again), load_bundle(other)
    weights = "torch/weights.pt"
    assert a.manifest.artifacts[weights] == b.manifest.artifacts[weights]
    assert a.manifest.artifacts[weights] != c.manifest.artifacts[weights]
    for mode in ("standard", "efficient"):
        np.testing.assert_array_equal(a.probe_expected("torch-eager", mode)[0],
                                      b.probe_expected("torch-eager", mode)[0])
    assert not np.allclose(a.probe_expected("torch-eager", "standard")[0],
                           c.probe_expected("torch-eager", "standard")[0])


# --------------------------------------------------------------------------- refusals


def test_when_an_artifact_is_changed_expect_sha256_mismatch_naming_it(copy):
    weights = copy / "torch" / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    message = refused(copy)
    assert "'torch/weights.pt' sha256 mismatch" in message


def test_when_an_artifact_is_truncated_expect_size_mismatch_naming_it(copy):
    probe = copy / "probe.npz"
    probe.write_bytes(probe.read_bytes()[:100])
    assert "'probe.npz' has 100 bytes" in refused(copy)


def test_when_an_artifact_is_missing_expect_it_named(copy):
    (copy / "probe.npz").unlink()
    assert "artifact 'probe.npz' listed in manifest.json is missing" in refused(copy)


def test_when_an_unlisted_file_is_present_expect_it_named(copy):
    (copy / "torch" / "extra.bin").write_bytes(b"x")
    assert "unexpected file 'torch/extra.bin' is not listed" in refused(copy)


def test_when_manifest_is_truncated_expect_invalid_json(copy):
    text = (copy / MANIFEST_NAME).read_bytes()
    (copy / MANIFEST_NAME).write_bytes(text[: len(text) // 2])
    assert "manifest.json is not valid JSON (truncated?)" in refused(copy)


def test_when_manifest_is_missing_or_path_is_wrong_expect_one_line(copy, tmp_path):
    (copy / MANIFEST_NAME).unlink()
    assert "manifest.json is missing" in refused(copy)
    with pytest.raises(BundleError, match="no such directory"):
        load_bundle(tmp_path / "nowhere")


def test_when_format_version_is_unknown_expect_it_named(copy):
    edit_manifest(copy, lambda m: m.update(format_version=FORMAT_VERSION + 1))
    message = refused(copy)
    assert f"format_version: {FORMAT_VERSION + 1} is not supported" in message


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda m: m["io"].update(chunk_size="50"),
         'io.chunk_size: must be a positive integer, not "50"'),
        (lambda m: m["normalization"]["actions"]["std"].__setitem__(2, -1.0),
         "normalization.actions.std[2]: must be a positive finite number"),
        (lambda m: m["joints"]["names"].pop(),
         "joints.position_min: must have 6 entries (one per joint), not 7"),
        (lambda m: m.pop("provenance"), "provenance: is missing"),
        (lambda m: m["backends"]["torch-eager"]["artifacts"].update(policy="../x.pt"),
         "backends.torch-eager.artifacts.policy: must be a plain relative path"),
        (lambda m: m["probe"]["tolerance"]["torch-eager"].update(actions_atol=True),
         "probe.tolerance.torch-eager.actions_atol: must be a number, not true"),
        (lambda m: m.update(format="something-else"), "format: must be 'ramp-edge-bundle'"),
        (lambda m: m["io"]["tokenizer"].update(name="bpe"),
         "io.tokenizer: tokenizer 'bpe' is unknown"),
        (lambda m: m["model"].update(policy_uses_world_model="no"),
         'model.policy_uses_world_model: must be true or false, not "no"'),
    ],
    ids=["chunk-size-string", "negative-std", "joint-count", "no-provenance", "path-escape",
         "bool-tolerance", "wrong-format", "unknown-tokenizer", "world-model-flag-string"],
)
def test_when_manifest_has_wrong_types_expect_the_field_named(copy, edit, expected):
    edit_manifest(copy, edit)
    assert expected in refused(copy)


def test_when_weights_do_not_reproduce_the_probe_expect_refusal_to_run(copy):
    weights = copy / "torch" / "weights.pt"
    state = torch.load(weights, weights_only=True)
    state["policy.action_head.bias"] += 0.1  # a consistent bundle whose outputs are wrong
    torch.save(state, weights)
    rehash(copy)
    bundle = load_bundle(copy)  # hashes agree: loading succeeds
    with pytest.raises(BundleError, match=r"probe mismatch on backend torch-eager \(standard "
                                          r"mode\): action error .* exceeds the tolerance"):
        open_engine(bundle, "torch-eager")
    with pytest.raises(EngineUnavailableError, match="torch-eager: probe mismatch"):
        select_engine(bundle)


def test_when_probe_file_lacks_recorded_outputs_expect_it_named(copy):
    with np.load(copy / "probe.npz") as npz:
        arrays = {k: npz[k] for k in npz.files if not k.startswith("out/")}
    np.savez(copy / "probe.npz", **arrays)
    rehash(copy)
    assert "probe.npz lacks 'out/torch-eager/standard/actions'" in refused(copy)


def test_bundle_error_is_an_edge_error_and_a_value_error():
    assert issubclass(BundleError, EdgeError) and issubclass(BundleError, ValueError)


# --------------------------------------------------------------------------- writing


def test_when_writer_fails_midway_expect_nothing_left_behind(built, tmp_path):
    out = tmp_path / "new"
    with pytest.raises(RuntimeError, match="boom"), BundleWriter(out) as w:
        w.file("torch/weights.pt").write_bytes(b"half")
        raise RuntimeError("boom")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_when_target_exists_expect_refusal_unless_overwrite(built, tmp_path):
    out = Path(shutil.copytree(built, tmp_path / "b"))
    with pytest.raises(BundleError, match="already exists"):
        BundleWriter(out)
    source = load_bundle(built).manifest.raw
    with BundleWriter(out, overwrite=True) as w:
        for rel in source["artifacts"]:
            target = w.file(rel)
            target.write_bytes((built / rel).read_bytes())
        keys = ("name", "model", "io", "joints", "normalization", "backends", "probe",
                "provenance")
        w.write_manifest({k: source[k] for k in keys})
        assert w.commit() == out
    assert load_bundle(out).sha256 != ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # old copy and temp removed


def test_when_commit_comes_before_the_manifest_expect_refusal(tmp_path):
    with BundleWriter(tmp_path / "x") as w:
        w.file("a.bin").write_bytes(b"a")
        with pytest.raises(BundleError, match="write_manifest"):
            w.commit()


# --------------------------------------------------------------------------- tokenizer


def test_when_text_is_tokenized_expect_fixed_length_deterministic_ids():
    tok = Tokenizer()
    ids = tok.encode("Pick up the RED cube!")
    assert ids.dtype == np.int64 and ids.shape == (32,)
    assert ids[0] == BOS_ID and np.all(ids[7:] == PAD_ID) and np.all(ids[1:7] >= 2)
    np.testing.assert_array_equal(ids, tok.encode("pick up the red cube!"))  # case-folded
    assert tok.pieces("Screwdriver") == ["screwd", "##river"]
    # FNV-1a, never Python's salted hash(): ids are pinned across processes and versions.
    assert tok.piece_id("cube") == 2 + 0x4C5F6190ACB3DC80 % (8192 - 2)
    assert tok.encode("")[0] == BOS_ID and tok.encode("")[1] == PAD_ID
    assert tok.is_truncated("a " * 40) and not tok.is_truncated("open the drawer")


def test_when_tokenizer_spec_round_trips_expect_equal_and_bad_spec_refused():
    tok = Tokenizer(vocab_size=1000, max_length=16)
    assert Tokenizer.from_spec(tok.spec()) == tok
    with pytest.raises(ValueError, match="unknown"):
        Tokenizer.from_spec({**tok.spec(), "name": "bpe"})
    with pytest.raises(ValueError, match="vocab_size must be"):
        Tokenizer(vocab_size=2)
