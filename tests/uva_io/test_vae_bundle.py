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
