"""VLA policy: act() shapes, classifier-free guidance, save/load round trips, MiniLM cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sop_ros.core.model import (
    ConfigError,
    Indicator,
    InstructionEncoder,
    VLAConfig,
    VLAPolicy,
    preset,
    shared_instruction_encoder,
)
from sop_ros.core.model.vla import CONFIG_TENSOR_KEY

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: on a shared 2-core runner more threads only fight each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def encoder() -> InstructionEncoder:
    return shared_instruction_encoder()


@pytest.fixture(scope="module")
def policy(encoder) -> VLAPolicy:
    torch.manual_seed(0)
    return VLAPolicy(preset("tiny", value_bins=11), instruction_encoder=encoder, device="cpu").eval()


def _obs(seed: int = 0, size: int = 48) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (size, size + 16, 3), dtype=np.uint8),
        "state": rng.normal(size=4).astype(np.float32),
    }


def test_act_returns_bounded_chunk_of_configured_shape(policy):
    chunk = policy.act(_obs(), "push the puck to the goal")
    assert chunk.shape == (policy.config.chunk_size, policy.config.action_dim)
    assert chunk.dtype == np.float32
    assert np.all(np.abs(chunk) <= policy.config.action_bound)
    # a different observation gives a different chunk: the image and state are really used
    assert not np.allclose(chunk, policy.act(_obs(1), "push the puck to the goal"))


def test_classifier_free_guidance_combines_conditional_and_unconditional(policy):
    # make the indicator embedding matter strongly so cond and uncond differ clearly
    with torch.no_grad():
        policy.indicator_embedding.weight[Indicator.POSITIVE].normal_(0, 3.0)
    obs, text = _obs(2), "open the drawer"
    uncond = policy.act(obs, text)
    cond = policy.act(obs, text, indicator="positive")
    assert not np.allclose(cond, uncond, atol=1e-4)
    np.testing.assert_allclose(policy.act(obs, text, indicator=True, guidance=1.0), cond, atol=1e-5)
    np.testing.assert_allclose(policy.act(obs, text, indicator="positive", guidance=0.0), uncond, atol=1e-5)
    np.testing.assert_allclose(
        policy.act(obs, text, indicator="positive", guidance=2.0), uncond + 2.0 * (cond - uncond), atol=1e-5
    )
    with pytest.raises(ValueError, match="guidance needs"):
        policy.act(obs, text, guidance=2.0)


def test_act_rejects_bad_observations_naming_the_field(policy):
    with pytest.raises(ValueError, match="'image'"):
        policy.act({"image": np.zeros((8, 8, 3), np.float32), "state": np.zeros(4, np.float32)}, "x")
    with pytest.raises(ValueError, match="'state'"):
        policy.act({"image": np.zeros((8, 8, 3), np.uint8), "state": np.zeros(7, np.float32)}, "x")
    with pytest.raises(ValueError, match="'state' is missing"):
        policy.act({"image": np.zeros((8, 8, 3), np.uint8)}, "x")


def test_save_load_round_trip_rebuilds_identical_model(policy, encoder, tmp_path):
    path = policy.save(tmp_path / "w.safetensors")
    loaded = VLAPolicy.load(path, device="cpu", instruction_encoder=encoder).eval()
    assert loaded.config == policy.config
    obs = _obs(3)
    np.testing.assert_array_equal(
        loaded.act(obs, "reach", indicator="negative"), policy.act(obs, "reach", indicator="negative")
    )
    ckpt = policy.checkpoint_tensors()
    assert ckpt[CONFIG_TENSOR_KEY].dtype == torch.uint8
    rebuilt = VLAPolicy.from_checkpoint_tensors(ckpt, device="cpu", instruction_encoder=encoder).eval()
    np.testing.assert_array_equal(rebuilt.act(obs, "reach"), policy.act(obs, "reach"))
    # the value network is part of the checkpoint too
    assert any(k.startswith("value_net.") for k in ckpt)


def test_checkpoint_for_other_architecture_is_rejected(policy, encoder):
    other = VLAPolicy(preset("tiny", chunk_size=6), instruction_encoder=encoder, device="cpu")
    with pytest.raises(ConfigError, match="does not fit"):
        other.load_tensors(policy.tensors())


def test_config_round_trips_through_json_and_rejects_unknown_fields():
    for name in ("tiny", "tiny_siglip", "base"):
        cfg = preset(name, value_bins=21)
        assert VLAConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="unknown model config field"):
        VLAConfig.from_dict({**preset("tiny").to_dict(), "colour": 1})
    with pytest.raises(ConfigError, match="patch_size"):
        preset("tiny").to_dict() and VLAConfig.from_dict({"vision": {"image_size": 60, "patch_size": 8}})
    with pytest.raises(ConfigError, match="did you mean 'tiny'"):
        preset("tiyn")


def test_instruction_embeddings_are_cached_and_meaningful(encoder):
    calls = encoder.encoder_calls
    texts = ["push the puck to the goal zz1", "push the puck to the target zz1", "open the drawer zz1"]
    emb = encoder.embed(texts)
    assert encoder.encoder_calls == calls + 1  # one batched run for the three new strings
    again = encoder.embed(texts[::-1] + texts)
    assert encoder.encoder_calls == calls + 1  # cached: the encoder did not run again
    torch.testing.assert_close(again[0], emb[2])
    assert emb.shape == (3, 384)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    sims = emb @ emb.T
    assert sims[0, 1] > sims[0, 2]  # the real pretrained encoder: paraphrases are closer


def test_loading_the_encoder_draws_no_progress_bar_and_leaves_the_setting_alone(capfd):
    from transformers.utils import logging as transformers_logging

    assert transformers_logging.is_progress_bar_enabled()
    InstructionEncoder()
    assert "Loading weights" not in capfd.readouterr().err
    assert transformers_logging.is_progress_bar_enabled()


def test_policy_act_runs_the_encoder_once_per_instruction(policy, encoder):
    calls = encoder.encoder_calls
    for _ in range(5):
        policy.act(_obs(), "press the button zz2")
    assert encoder.encoder_calls == calls + 1


def test_vision_tower_loads_from_a_local_pretrained_path(encoder, tmp_path):
    import dataclasses

    from sop_ros.core.model.vla import build_vision_tower

    cfg = preset("tiny_siglip")
    torch.manual_seed(5)
    build_vision_tower(cfg.vision).save_pretrained(tmp_path / "siglip")
    pretrained = cfg.replace(vision=dataclasses.replace(cfg.vision, pretrained_path=str(tmp_path / "siglip")))
    policy = VLAPolicy(pretrained, instruction_encoder=encoder, device="cpu")
    reference = build_vision_tower(pretrained.vision)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(policy.encoder.vision.state_dict()[key], value)
    wrong = cfg.replace(
        vision=dataclasses.replace(cfg.vision, hidden_size=64, pretrained_path=str(tmp_path / "siglip"))
    )
    with pytest.raises(ConfigError, match="pretrained vision tower"):
        VLAPolicy(wrong, instruction_encoder=encoder, device="cpu")


def test_resnet_tower_round_trips_and_validates_its_shape():
    cfg = preset("tiny", value_bins=11)
    assert VLAConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # lists back to tuples
    assert (cfg.vision.num_tokens, cfg.vision.token_dim) == (16, 128)  # 64 px / stride 16 = 4x4 cells
    assert VLAConfig.from_dict({"vision": {"image_size": 64}}).vision.architecture == "siglip"  # older checkpoints
    with pytest.raises(ConfigError, match="architecture"):
        VLAConfig.from_dict({"vision": {"architecture": "cnn"}})
    with pytest.raises(ConfigError, match="equal length"):
        VLAConfig.from_dict({"vision": {"architecture": "resnet", "resnet_widths": [16, 32], "resnet_depths": [1]}})
    assert cfg.value_tower.architecture == "siglip"  # the value network keeps the SigLIP tower
    with pytest.raises(ConfigError, match="value_vision.image_size"):
        VLAConfig.from_dict({"vision": {"architecture": "resnet"}, "value_vision": {"image_size": 32}})
    with pytest.raises(ConfigError, match="stride 16"):
        VLAConfig.from_dict({"vision": {"architecture": "resnet", "image_size": 40}})


def test_resnet_policy_acts_saves_and_knows_where_things_are(encoder, tmp_path):
    torch.manual_seed(0)
    policy = VLAPolicy(preset("tiny"), instruction_encoder=encoder, device="cpu").eval()
    chunk = policy.act(_obs(), "press the button")
    assert chunk.shape == (4, 4) and np.abs(chunk).max() <= 1.0
    loaded = VLAPolicy.load(policy.save(tmp_path / "p.safetensors"), device="cpu", instruction_encoder=encoder)
    np.testing.assert_allclose(loaded.act(_obs(), "press the button"), chunk, atol=1e-6)

    # Identical features in two cells must become different memory tokens: the cell position
    # embedding is all that tells the order-blind cross-attention where a feature is.
    class SameEverywhere(torch.nn.Module):
        def forward(self, pixel_values):
            return type("Out", (), {"last_hidden_state": torch.ones(pixel_values.shape[0], 128, 4, 4)})()

    policy.encoder.vision = SameEverywhere()
    with torch.no_grad():
        memory = policy.encoder(torch.zeros(1, 3, 64, 64), torch.zeros(1, 4), policy.text(["x"]))
    cells = memory[0, :16]
    assert memory.shape == (1, 16 + 2, 128)
    assert torch.cdist(cells, cells).add(torch.eye(16) * 1e3).min() > 1e-3  # no two cells alike


def test_resnet_tower_output_depends_neither_on_the_batch_nor_on_train_mode(encoder):
    # BatchNorm would make both differ and would move a frozen value network's running statistics.
    torch.manual_seed(0)
    policy = VLAPolicy(preset("tiny"), instruction_encoder=encoder, device="cpu")
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8))
    state = policy.state_dict()
    with torch.no_grad():
        policy.train()
        alone = policy.encoder.vision(pixel_values=policy.pixels(frames[:1])).last_hidden_state
        batched = policy.encoder.vision(pixel_values=policy.pixels(frames)).last_hidden_state[:1]
        policy.eval()
        evaluated = policy.encoder.vision(pixel_values=policy.pixels(frames[:1])).last_hidden_state
    torch.testing.assert_close(alone, batched, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone, evaluated, atol=1e-5, rtol=1e-5)
    assert all(torch.equal(v, policy.state_dict()[k]) for k, v in state.items())
