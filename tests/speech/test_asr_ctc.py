"""CTC models: vocabulary from texts, greedy and prefix beam decoding, both encoders at any input length, and a
vocabulary change that keeps what the shared characters learned."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from transferkit.audio.ctc import (BLANK, ConvEncoder, CtcNet, CtcVocabulary, WhisperEncoderCTC, beam_ctc,
                                   build_ctc_net, greedy_ctc, output_lengths, prefix_beam_ctc, transfer_ctc_weights)
from transferkit.errors import DataError


def test_vocabulary_from_texts_is_sorted_with_blank_first():
    vocab = CtcVocabulary.from_texts(["ba c", "cab"])
    assert vocab.tokens == (BLANK, " ", "a", "b", "c")
    assert vocab.decode(vocab.encode("cab a")) == "cab a"
    with pytest.raises(DataError, match=r"\['z'\]"):
        vocab.encode("zab")


def test_greedy_merges_repeats_and_drops_blanks():
    # steps: a a _ a b b _  ->  "aab"
    ids = [1, 1, 0, 1, 2, 2, 0]
    logits = torch.full((1, len(ids), 3), -5.0)
    logits[0, torch.arange(len(ids)), torch.tensor(ids)] = 5.0
    assert greedy_ctc(logits) == [[1, 1, 2]]
    assert greedy_ctc(logits, torch.tensor([3])) == [[1]]


def test_prefix_beam_sums_alignments_that_greedy_cannot():
    # Per step: blank 0.4, "a" 0.35, "b" 0.25. Greedy says "" (blank everywhere); summed over alignments, "a" is
    # more likely than the empty prefix (0.4 ** 2 = 0.16 against 0.35*0.4*2 + 0.35**2 = 0.4025).
    frame = np.log(np.array([0.4, 0.35, 0.25]))
    logp = np.stack([frame, frame])
    assert greedy_ctc(torch.from_numpy(logp)[None]) == [[]]
    assert prefix_beam_ctc(logp, beam=3) == [1]
    assert beam_ctc(torch.from_numpy(logp)[None], beam=3) == [[1]]


@pytest.mark.parametrize("frames", [37, 200])
def test_encoders_take_any_length_and_halve_it(frames):
    torch.manual_seed(0)
    conv = CtcNet(ConvEncoder(channels=16, blocks=1, repeat=1), 5).eval()
    config = dict(vocab_size=100, num_mel_bins=80, d_model=32, encoder_layers=1, decoder_layers=1,
                  encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                  max_source_positions=1500, max_target_positions=32)
    whisper = CtcNet(WhisperEncoderCTC(config), 5).eval()
    x = torch.randn(2, 80, frames)
    steps = int(output_lengths(torch.tensor(frames)))
    assert steps == math.ceil(frames / 2)
    assert conv(x).shape == (2, steps, 5)
    assert whisper(x).shape == (2, steps, 5)


def test_vocabulary_change_keeps_rows_of_shared_characters():
    torch.manual_seed(0)
    old = CtcVocabulary.from_texts(["abc d"])
    new = CtcVocabulary.from_texts(["abe d"])  # c dropped, e new
    arch = {"encoder": "conv", "conv": {"channels": 8, "blocks": 1, "repeat": 1}}
    trained = build_ctc_net({**arch, "vocabulary": old.tokens})
    with torch.no_grad():
        trained.head.weight.uniform_(5, 6)
    net = build_ctc_net({**arch, "vocabulary": new.tokens})
    report = transfer_ctc_weights(net, trained.state_dict(), "old.ckpt", old.tokens, new.tokens)
    assert report.characters == {"kept": [" ", "a", "b", "d"], "new": ["e"], "dropped": ["c"]}
    for char in (BLANK, " ", "a", "b", "d"):
        assert torch.equal(net.head.weight[new.tokens.index(char)], trained.head.weight[old.tokens.index(char)])
    assert float(net.head.weight[new.tokens.index("e")].detach().abs().max()) < 5  # fresh, not copied
    assert "head.weight" in report.as_dict()["partially_loaded"]
    assert torch.equal(net.backbone.prologue[0].weight, trained.backbone.prologue[0].weight)
