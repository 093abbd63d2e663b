"""The encoder's options: spatial-softmax camera features (``[model] keypoints = K``), an
order-aware instruction encoder (``[model] lang_layers = N``) and instruction-modulated camera
features (``[model] film = true``).

Budget: hand-set one-layer encoders (milliseconds) and one small bundle exported to torch and
ONNX fp32 (a few seconds, most of it the ONNX export).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from episode_samples import JOINT_NAMES

from models.export import JointStats, export_bundle, synthetic_observations
from models.language import Tokenizer
from models.networks import ObservationEncoder, RampConfig, RampNetworks
from ramp_edge.bundle import load_bundle
from ramp_edge.engines import EngineOptions, backend_status, open_engine

LIMITS = [(-2.8, 2.8)] * 6 + [(0.0, 0.04)]
TOKENIZER = Tokenizer(vocab_size=512, max_length=32)


def _small(keypoints: int, lang_layers: int = 0, film: bool = False, **sizes) -> RampConfig:
    base = dict(image_height=48, image_width=48, n_joints=7, chunk_size=10, horizons=(4, 8),
                vocab_size=512, max_tokens=32, cnn_channels=(16, 32), cnn_strides=(2, 1),
                camera_dim=32, joint_dim=16, latent_dim=32, lang_dim=16, wm_hidden=32,
                d_model=32, n_heads=2, n_layers=1, mlp_ratio=2, action_patch=5)
    return RampConfig(**{**base, **sizes, "keypoints": keypoints, "lang_layers": lang_layers,
                              "film": film})


def _red_spot_encoder() -> ObservationEncoder:
    """One conv layer that passes the image through; one keypoint map = 50 x the red channel."""
    enc = ObservationEncoder(_small(1, image_height=40, image_width=60, cnn_channels=(3,),
                                    cnn_strides=(1,), n_cameras=1))
    with torch.no_grad():
        conv = enc.cnn[0]
        conv.weight.zero_()
        conv.bias.fill_(2.0)  # (pixel - 127.5) / 64 >= -2: ReLU keeps every pixel
        for c in range(3):
            conv.weight[c, c, 2, 2] = 1.0
        enc.keypoint_maps.weight.zero_()
        enc.keypoint_maps.bias.zero_()
        enc.keypoint_maps.weight[0, 0, 0, 0] = 50.0
    return enc.eval()


def _keypoint_xy(enc: ObservationEncoder, image: np.ndarray) -> np.ndarray:
    """The first keypoint's (x, y), through the encoder's own camera path."""
    maps = enc._camera_maps(torch.from_numpy(image)[None], torch.zeros(1, enc.cfg.lang_dim))
    return maps[0, 0].detach().numpy()


@pytest.mark.parametrize(("row", "col"), [(5, 10), (30, 50), (20, 30), (0, 59)])
def test_keypoint_when_one_red_spot_expect_its_image_position(row, col):
    enc = _red_spot_encoder()
    image = np.zeros((40, 60, 3), np.uint8)
    image[row, col] = (255, 0, 0)
    xy = _keypoint_xy(enc, image)
    expected = (2.0 * col / 59 - 1.0, 2.0 * row / 39 - 1.0)  # x from the column, y from the row
    np.testing.assert_allclose(xy, expected, atol=0.02)


def test_keypoint_features_when_spot_moves_expect_camera_feature_to_change():
    """The keypoints feed the camera feature: moving the spot moves the observation latent."""
    enc = _red_spot_encoder()
    latents = []
    for col in (10, 50):
        image = np.zeros((1, 40, 60, 3), np.uint8)
        image[0, 20, col] = (255, 0, 0)
        o, _ = enc(torch.from_numpy(image), torch.zeros(1, 7), torch.zeros(1, 7),
                   torch.ones(1, 32, dtype=torch.int64))
        latents.append(o)
    assert not torch.allclose(latents[0], latents[1], atol=1e-3)


def test_config_when_keypoints_negative_or_missing_expect_error_or_flatten_default():
    with pytest.raises(ValueError, match="keypoints must be 0 or a positive integer"):
        _small(-1)
    with pytest.raises(ValueError, match="keypoints"):
        _small(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lang_layers must be 0 or a positive integer"):
        _small(0, -1)
    with pytest.raises(ValueError, match="lang_dim 15 is not a multiple of n_heads 2"):
        _small(0, 1, lang_dim=15)
    with pytest.raises(ValueError, match="film must be true or false"):
        _small(0, 0, 1)  # type: ignore[arg-type]
    old = _small(0).to_dict()
    del old["keypoints"], old["lang_layers"], old["film"]  # a manifest from before the fields
    back = RampConfig.from_dict(old)
    assert (back.keypoints, back.lang_layers, back.film) == (0, 0, False)
    # Without the options the encoder has no new layers; its parameters are what they were.
    names = {n for n, _ in RampNetworks(_small(0)).named_parameters()}
    assert not any(k in n for n in names for k in ("keypoint", "lang_blocks", "token_pos", "film"))
    assert "encoder.keypoint_maps.weight" in dict(RampNetworks(_small(8)).named_parameters())


# --------------------------------------------------------------------------- FiLM


def _observation_latent(enc: ObservationEncoder, images: torch.Tensor, text: str) -> torch.Tensor:
    tokens = torch.from_numpy(TOKENIZER.encode(text)).to(torch.int64)[None]
    o, _ = enc(images, torch.zeros(1, 7), torch.zeros(1, 7), tokens)
    return o[0]


def test_film_when_zero_initialised_expect_the_unmodulated_encoder():
    torch.manual_seed(0)
    plain = ObservationEncoder(_small(0)).eval()
    film = ObservationEncoder(_small(0, film=True)).eval()
    missing = film.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["film_proj.bias", "film_proj.weight"]
    images = torch.randint(0, 256, (2, 48, 48, 3), dtype=torch.uint8)
    torch.testing.assert_close(_observation_latent(film, images, "put the red cube in the box"),
                               _observation_latent(plain, images, "put the red cube in the box"))


def test_film_when_instruction_changes_expect_camera_features_to_follow_it_only_with_film():
    """Same images, another object named: without FiLM the observation latent cannot differ (the
    instruction joins later, in the policy); with it, it does."""
    images = torch.randint(0, 256, (2, 48, 48, 3), dtype=torch.uint8)
    torch.manual_seed(0)
    plain = ObservationEncoder(_small(0)).eval()
    torch.testing.assert_close(_observation_latent(plain, images, "put the red cube in the box"),
                               _observation_latent(plain, images, "put the blue cube in the box"))
    torch.manual_seed(0)
    film = ObservationEncoder(_small(0, film=True)).eval()
    with torch.no_grad():
        film.film_proj.weight.normal_(0.0, 0.1)
    gap = (_observation_latent(film, images, "put the red cube in the box")
           - _observation_latent(film, images, "put the blue cube in the box")).abs().max()
    assert gap > 1e-2


# --------------------------------------------------------------------------- instruction encoder

# Two stack_blocks instructions with the same words in another order: the tower differs.
FIRST = ("build a tower: the red cube at the bottom, the blue cube in the middle and the green "
         "cube on top")
SECOND = ("build a tower: the green cube at the bottom, the blue cube in the middle and the red "
          "cube on top")


def _instruction(enc: ObservationEncoder, text: str) -> torch.Tensor:
    tokens = torch.from_numpy(TOKENIZER.encode(text)).to(torch.int64)[None]
    _, lang = enc(torch.zeros(2, 48, 48, 3, dtype=torch.uint8), torch.zeros(1, 7),
                  torch.zeros(1, 7), tokens)
    return lang[0]


def test_instruction_when_same_words_in_other_order_expect_bag_of_words_equal_layers_differ():
    assert sorted(TOKENIZER.pieces(FIRST)) == sorted(TOKENIZER.pieces(SECOND))
    torch.manual_seed(0)
    bag = ObservationEncoder(_small(0, 0)).eval()
    torch.testing.assert_close(_instruction(bag, FIRST), _instruction(bag, SECOND))
    torch.manual_seed(0)
    ordered = ObservationEncoder(_small(0, 1)).eval()
    gap = (_instruction(ordered, FIRST) - _instruction(ordered, SECOND)).abs().max()
    assert gap > 1e-2


def test_instruction_when_padding_embedding_changes_expect_same_output():
    """Padding is masked out of attention and pooling: what its embedding row holds is unseen."""
    torch.manual_seed(0)
    enc = ObservationEncoder(_small(0, 2)).eval()
    assert (torch.from_numpy(TOKENIZER.encode(FIRST)) == 0).any()  # there is padding
    before = _instruction(enc, FIRST)
    with torch.no_grad():
        enc.token_embed.weight[0].normal_(0.0, 5.0)
    torch.testing.assert_close(_instruction(enc, FIRST), before)


def test_bundle_when_every_option_exported_expect_onnx_matches_torch(tmp_path):
    reason = backend_status("onnx-fp32")
    if reason is not None:
        pytest.skip(f"onnx-fp32 unavailable here: {reason}")
    torch.manual_seed(0)
    nets = RampNetworks(_small(8, 1, True)).eval()
    with torch.no_grad():  # FiLM starts at zero: give it weights, or the export test sees none
        nets.encoder.film_proj.weight.normal_(0.0, 0.1)
    joints = JointStats.from_limits(JOINT_NAMES, LIMITS)
    path = export_bundle(nets, tmp_path / "kp", joints=joints, camera_names=("scene", "wrist"),
                         tokenizer=TOKENIZER, provenance={"trained": False, "seed": 0},
                         name="kp", backends=["torch-eager", "onnx-fp32"])
    bundle = load_bundle(path)
    assert bundle.manifest.raw["model"]["config"]["keypoints"] == 8
    assert bundle.manifest.raw["model"]["config"]["lang_layers"] == 1
    assert bundle.manifest.raw["model"]["config"]["film"] is True
    observations = synthetic_observations(4, camera_names=bundle.camera_names,
                                          image_shape=(48, 48, 3), joints=joints,
                                          tokenizer=TOKENIZER, seed=99)
    one = EngineOptions(threads=1)
    with open_engine(bundle, "torch-eager", one) as ref, \
            open_engine(bundle, "onnx-fp32", one) as onnx:  # opening runs each probe
        for obs in observations:
            want, got = ref.predict(obs, "standard"), onnx.predict(obs, "standard")
            err = np.abs(got.actions - want.actions) / bundle.normalization.action_std
            assert err.max() < 1e-4
