"""speech_to_text training: CTC loss (ctc) or token cross-entropy (whisper); validation decodes greedily and logs
corpus-level WER and CER each epoch, with a few transcripts as TensorBoard text."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...audio.ctc import CtcVocabulary, ctc_loss, greedy_ctc, output_lengths
from ...audio.text import TextNorm, normalize
from ...audio.whisper import WhisperText, greedy_decode
from ...engine.meta import ModelMeta
from ...engine.module import TaskModule
from ...metrics.speech import wer_cer
from .data import IGNORE, decoder_inputs

SHOWN_TRANSCRIPTS = 4


def transcribe_batch(kind: str, net: nn.Module, features: torch.Tensor, frames: torch.Tensor,
                     vocabulary: CtcVocabulary | None, text: WhisperText | None, norm: TextNorm,
                     max_tokens: int = 96) -> list[str]:
    """Greedy transcripts of a batch by the eager network, normalised as the references are."""
    if kind == "ctc":
        ids = greedy_ctc(net(features), output_lengths(frames))
        raw = [vocabulary.decode(row) for row in ids]
    else:
        ids = greedy_decode(net.encode, net.start, features, text, max_tokens)
        raw = [text.decode(row) for row in ids]
    return [normalize(t, norm) for t in raw]


class SpeechModule(TaskModule):
    def __init__(self, net: nn.Module, meta: ModelMeta, train, *, kind: str, vocabulary: CtcVocabulary | None,
                 text: WhisperText | None, norm: TextNorm, val_texts: Sequence[str], pretrained_encoder: bool,
                 max_tokens: int = 96):
        super().__init__(net, meta, train)
        self.kind, self.vocabulary, self.text, self.norm = kind, vocabulary, text, norm
        self.val_texts = list(val_texts)
        self.pretrained_encoder = pretrained_encoder
        self.max_tokens = max_tokens
        self._refs: list[str] = []
        self._hyps: list[str] = []

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The pretrained encoder learns at learning_rate x backbone_lr_scale; an encoder trained from scratch
        learns at the full rate with the head."""
        if self.pretrained_encoder:
            return super().parameter_groups()
        return {"head": [p for p in self.parameters() if p.requires_grad]}

    def loss(self, features, frames, targets, lengths) -> torch.Tensor:
        if self.kind == "ctc":
            return ctc_loss(self.net(features), output_lengths(frames), targets, lengths)
        logits = self.net(features, decoder_inputs(targets))
        labels = targets[:, 1:]
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE)

    def training_step(self, batch, batch_idx):
        features, frames, targets, lengths, _, bad = batch
        self.note_skipped(bad)
        if features is None:
            return None
        loss = self.loss(features, frames, targets, lengths)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(features))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._refs, self._hyps = [], []

    def validation_step(self, batch, batch_idx):
        features, frames, targets, lengths, indices, bad = batch
        self.note_skipped(bad)
        if features is None:
            return
        self.log("val/loss", self.loss(features, frames, targets, lengths), on_epoch=True, prog_bar=True,
                 batch_size=len(features), sync_dist=True)
        hyps = transcribe_batch(self.kind, self.net, features, frames, self.vocabulary, self.text, self.norm,
                                self.max_tokens)
        self._refs += [self.val_texts[i] for i in indices.tolist()]
        self._hyps += hyps

    def on_validation_epoch_end(self) -> None:
        # corpus-level over every process's share of the val set: errors and lengths summed, then divided (a process
        # with no val batch still takes part in the gather)
        counts = torch.zeros(4, dtype=torch.long, device=self.device)
        if self._refs:
            scores = wer_cer(self._refs, self._hyps)
            counts += torch.tensor([scores["substitutions"] + scores["deletions"] + scores["insertions"],
                                    scores["words"], scores["char_errors"], scores["chars"]], device=self.device)
        if self.trainer is not None and self.trainer.world_size > 1:
            counts = self.all_gather(counts).reshape(-1, 4).sum(0)
        if int(counts[1]) == 0:
            return
        word_errors, words, char_errors, chars = counts.tolist()
        self.log("val/wer", word_errors / max(words, 1.0), prog_bar=True)
        self.log("val/cer", char_errors / max(chars, 1.0), prog_bar=False)
        writer = self.tensorboard
        if writer is not None and not self.trainer.sanity_checking:
            lines = [f"    ref: {r}\n    hyp: {h}" for r, h in zip(self._refs[:SHOWN_TRANSCRIPTS],
                                                                self._hyps[:SHOWN_TRANSCRIPTS])]
            writer.add_text("val/transcripts", "\n\n".join(lines), self.current_epoch)
