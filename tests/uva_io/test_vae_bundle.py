"""One frames -> latents step: the encode job, the policy and VAE training share it."""

import numpy as np
import torch

from uva.vae import AutoencoderKL, VAEConfig
from uva_io.vae_bundle import encode_frames, frames_to_pixels, load_vae, save_vae


def small_vae():
    torch.manual_seed(0)
    return AutoencoderKL(VAEConfig(ch=8, ch_mult=(1, 2), num_res_blocks=1, z_channels=4, attn_resolutions=(),
                                   resolution=8, scale=0.5, num_groups=4)).eval()


def test_pixels_and_latents(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, size=(5, 8, 8, 3), dtype=np.uint8)
    x = frames_to_pixels(frames)
    assert x.shape == (5, 3, 8, 8) and x.dtype == torch.float32
    assert torch.equal(x[0, :, 0, 0], torch.from_numpy(frames[0, 0, 0]).float() / 127.5 - 1)
    vae = small_vae()
    z = encode_frames(vae, frames, batch_size=2)
    assert z.shape == (5, 4, 4, 4) and z.dtype == np.float16
    with torch.no_grad():
        want = vae.encode(x).numpy().astype(np.float16)
    np.testing.assert_array_equal(z, want)
    # the bundle round trip keeps the same latents
    path = save_vae(vae, tmp_path / "v.safetensors")
    np.testing.assert_array_equal(encode_frames(load_vae(path), frames), z)


def test_the_encoder_and_the_policy_encode_alike(tmp_path):
    from preprocessing.encode import FrameEncoder

    path = save_vae(small_vae(), tmp_path / "v.safetensors")
    frames = np.random.default_rng(1).integers(0, 256, size=(3, 8, 8, 3), dtype=np.uint8)
    threads = torch.get_num_threads()
    try:
        enc = FrameEncoder(str(path), None, batch_size=64).encode_frames(frames)
    finally:
        torch.set_num_threads(threads)  # the encoder actor pins its own thread count
    np.testing.assert_array_equal(enc, encode_frames(load_vae(path), frames))


def test_episodes_share_vae_batches_and_come_back_apart(tmp_path):
    """The encode actor's call for a whole shard: frames of several episodes and cameras in shared
    batches, split back to each; errors and long episodes pass through untouched."""
    from preprocessing.encode import FrameEncoder

    path = save_vae(small_vae(), tmp_path / "v.safetensors")
    rng = np.random.default_rng(2)
    clip = lambda n: rng.integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)  # noqa: E731
    decoded = [{"episode_id": "a", "frames": {"main": clip(3), "wrist": clip(3)}, "arrays": {}},
               {"episode_id": "b", "error": "unreadable"},
               {"episode_id": "c", "stream": True},
               {"episode_id": "d", "frames": {"main": clip(5)}, "arrays": {}}]
    threads = torch.get_num_threads()
    try:
        enc = FrameEncoder(str(path), None, batch_size=4)
        out = enc.encode_episodes(*decoded)
        alone = {d["episode_id"]: enc.encode_episode(d) for d in decoded if "frames" in d}
    finally:
        torch.set_num_threads(threads)
    assert [o["episode_id"] for o in out] == ["a", "b", "c", "d"]
    assert out[1] == decoded[1] and out[2] == decoded[2] and "frames" not in out[0]
    for o in (out[0], out[3]):
        for cam, z in o["latents"].items():
            np.testing.assert_allclose(z.astype(np.float32), alone[o["episode_id"]]["latents"][cam].astype(np.float32),
                                       atol=2e-3)
    assert out[0]["latents"]["wrist"].shape[0] == 3 and out[3]["latents"]["main"].shape[0] == 5
