"""A bundle must fit the robot before it runs: joints, cameras and image size."""

from __future__ import annotations

import pytest

from models.reference import build_reference_bundle
from ramp_edge.config import load_config
from ramp_edge.engine_slot import BundleMismatchError, open_bundle_engine


@pytest.fixture(scope="module")
def config():
    return load_config()


def test_when_the_bundle_takes_another_image_size_expect_refused_before_running(
        tmp_path, config):
    path = build_reference_bundle(tmp_path / "small", config.joint_names,
                                  camera_names=tuple(c.name for c in config.cameras),
                                  image_hw=(48, 64), backends=("torch-eager",))
    with pytest.raises(BundleMismatchError, match=r"takes 64x48 images.*scene 96x96"):
        open_bundle_engine(path, config, None, 1)


def test_when_the_bundle_fits_expect_an_engine(tmp_path, config):
    path = build_reference_bundle(tmp_path / "fits", config.joint_names,
                                  camera_names=tuple(c.name for c in config.cameras),
                                  backends=("torch-eager",))
    loaded = open_bundle_engine(path, config, None, 1)
    try:
        assert loaded.bundle.joint_names == config.joint_names
    finally:
        loaded.engine.close()


def test_when_the_bundle_drives_other_joints_expect_refused(tmp_path, config):
    path = build_reference_bundle(tmp_path / "other", [f"j{i}" for i in range(7)],
                                  camera_names=tuple(c.name for c in config.cameras),
                                  backends=("torch-eager",))
    with pytest.raises(BundleMismatchError, match="drives joints"):
        open_bundle_engine(path, config, None, 1)


def test_when_a_shipped_bundle_fits_the_robot_expect_it_chosen_and_not_otherwise(
        tmp_path, config, monkeypatch):
    import models.shipped
    from ramp_edge.session import _shipped_fit

    shipped = tmp_path / "shipped"
    monkeypatch.setattr(models.shipped, "SHIPPED_DIR", shipped)
    assert _shipped_fit(config) is None  # nothing shipped
    cams = tuple(c.name for c in config.cameras)
    build_reference_bundle(shipped / "a-small", config.joint_names, camera_names=cams,
                           image_hw=(48, 48), backends=("torch-eager",))
    assert _shipped_fit(config) is None  # another image size: not this robot's
    fits = build_reference_bundle(shipped / "b-fits", config.joint_names, camera_names=cams,
                                  backends=("torch-eager",))
    assert _shipped_fit(config) == fits
    (fits / "torch" / "weights.pt").write_bytes(b"damaged")
    assert _shipped_fit(config) is None  # a damaged install is passed over
