"""Text encoders: the built-in hash tokens and a transformers model from a local folder."""

import numpy as np
import pytest

from uva_io.text import load_text_encoder


def test_hash_tokens_are_deterministic_unit_and_padded():
    enc = load_text_encoder("hash:128", max_tokens=6)
    a = enc.encode(["Push the block LEFT.", "push the block right", ""])
    assert a.shape == (3, 6, 128) and a.dtype == np.float32
    np.testing.assert_array_equal(a, load_text_encoder("hash:128", 6).encode(["push the block left", "push the block right", ""]))
    norms = np.linalg.norm(a, axis=-1)
    np.testing.assert_allclose(norms[:2, :4], 1.0, rtol=1e-6)
    assert (a[:2, 4:] == 0).all() and (a[2] == 0).all()  # padding and an empty instruction: zero rows
    np.testing.assert_array_equal(a[0, :3], a[1, :3])  # the same first words, the same tokens
    assert abs(float(a[0, 3] @ a[1, 3])) < 0.5  # "left" and "right": nearly orthogonal tokens
    long = enc.encode([" ".join(f"w{i}" for i in range(20))])
    assert long.shape == (1, 6, 128) and (np.linalg.norm(long, axis=-1) > 0).all()  # truncated
    assert enc.identity == "hash-v2-128" and load_text_encoder("hash").dim == 256


def test_bad_specs_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="must be hash"):
        load_text_encoder("clip")
    with pytest.raises(ValueError, match="hash takes a size"):
        load_text_encoder("hash:big")
    with pytest.raises(ValueError, match="no config.json"):
        load_text_encoder(f"transformers:{tmp_path}")


def make_tiny_bert(folder):
    """A BERT text model small enough to build here: random weights, a 40-word vocabulary."""
    transformers = pytest.importorskip("transformers")
    import torch

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "push", "the", "block", "left", "right", "pick", "cup",
             "up", "put", "on", "plate", "open", "drawer", "close", "a"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = transformers.BertTokenizer(str(folder / "vocab.txt"))
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=len(words), hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=32)
    transformers.BertModel(cfg).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def test_a_transformers_model_from_a_local_folder(tmp_path):
    folder = make_tiny_bert(tmp_path / "bert")
    enc = load_text_encoder(f"transformers:{folder}", max_tokens=8)
    out = enc.encode(["push the block left", "push the block right"])
    assert out.shape == (2, 8, 24) and enc.dim == 24
    # [CLS] push the block left [SEP]: six tokens, then padding (zero rows)
    np.testing.assert_allclose(np.linalg.norm(out[:, :6], axis=-1), 1.0, rtol=1e-5)
    assert (out[:, 6:] == 0).all() and not np.allclose(out[0], out[1])
    again = load_text_encoder(f"transformers:{folder}", max_tokens=8)
    assert again.identity == enc.identity and enc.identity.startswith("transformers-bert-24-")
    np.testing.assert_allclose(again.encode(["push the block left"])[0], out[0], rtol=1e-5, atol=1e-6)
