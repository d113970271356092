"""Speech data: NeMo manifests read once (bad lines named), waveforms decoded in the loader, log-mel features per
batch, CTC or Whisper targets, and training batches of similar duration."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ...audio.ctc import CtcVocabulary
from ...audio.features import log_mel
from ...audio.io import load_audio
from ...audio.manifest import Utterance, read_manifest
from ...audio.text import TextNorm
from ...audio.whisper import EOT, WhisperText
from ...data.buckets import bucketed_loader
from ...data.items import skipped_entry
from ...data.module import TaskData
from ...data.resumable import ResumableLoader
from ...errors import DataError, SpecError
from ...spec import require_path

log = logging.getLogger("transferkit")

SAMPLE_RATE = 16000
IGNORE = -100  # Whisper targets: positions the loss skips


@dataclass(frozen=True)
class Item:
    """One utterance of a split: where it is named (manifest:line), the utterance, its index in the split."""

    where: str
    utt: Utterance
    index: int


def text_norm(spec) -> TextNorm:
    t = spec.data.text
    return TextNorm(lowercase=t.lowercase, punctuation=t.punctuation, numbers=t.numbers)


def read_split(path: str, key: str, spec, check_audio: bool = True) -> tuple[list[Item], dict[str, str]]:
    """The usable items of a manifest and {where: reason} of its skipped lines."""
    manifest = require_path(key, path, "file")
    utts, skipped = read_manifest(manifest, norm=text_norm(spec), max_duration=spec.data.max_duration,
                                  check_audio=check_audio, duration_tolerance=spec.data.duration_tolerance)
    items = [Item(f"{manifest.name}:{u.line}", u, i) for i, u in enumerate(utts)]
    bad = {}
    for entry in skipped:
        where = ":".join(entry.split(":", 2)[:2])
        bad[where] = entry
    return items, bad


def load_wave(utt: Utterance) -> np.ndarray:
    """The utterance's samples at 16 kHz: the whole file, or the stretch its manifest `offset` selects."""
    if utt.offset > 0:
        return load_audio(utt.audio, SAMPLE_RATE, offset=utt.offset, duration=utt.duration)
    return load_audio(utt.audio, SAMPLE_RATE)


class WaveDataset(Dataset):
    """(wave, index) per item, or (None, skipped_entry) for audio that fails to decode; training waves may be
    speed-perturbed and noised (data.augment)."""

    def __init__(self, items: Sequence[Item], augment=None):
        self.items = list(items)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        item = self.items[i]
        try:
            wave = load_wave(item.utt)
        except DataError as e:
            return None, skipped_entry(item.where, e)
        if self.augment is not None:
            wave = augment_wave(wave, self.augment, np.random.default_rng(int(torch.randint(0, 2**31, ()))))
        return torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), i


def augment_wave(wave: np.ndarray, cfg, rng: np.random.Generator) -> np.ndarray:
    """Speed perturbation and additive noise, each with its probability."""
    from ...audio.augment import add_noise, speed_perturb

    if cfg.speed_prob and rng.random() < cfg.speed_prob:
        wave = speed_perturb(wave, SAMPLE_RATE, float(rng.uniform(*cfg.speed_range)))
    if cfg.noise_prob and rng.random() < cfg.noise_prob:
        wave = add_noise(wave, float(rng.uniform(*cfg.noise_snr_db)), rng)
    return np.asarray(wave, dtype=np.float32)


def features_of(waves: Sequence[torch.Tensor], pad_to: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mel features [N, 80, T] of waves zero-padded to the longest (or to `pad_to` seconds), and each row's
    own frame count."""
    longest = max(len(w) for w in waves)
    batch = torch.zeros(len(waves), max(longest, 1))
    for row, w in enumerate(waves):
        batch[row, :len(w)] = w
    features = log_mel(batch, SAMPLE_RATE, pad_to=pad_to)
    frames = torch.tensor([min(len(w) // 160, features.shape[-1]) for w in waves], dtype=torch.int64)
    if pad_to is not None:
        frames = torch.full_like(frames, features.shape[-1])  # the model reads the whole window
    return features, frames


class SpeechCollate:
    """Samples -> (features, frames, targets, target_lengths, indices, skipped entries).

    ctc: targets are the concatenated symbol ids; whisper: [N, L] decoder labels (prompt + text + EOT, IGNORE
    after the end), and `target_lengths` their lengths. Training batches may get SpecAugment masks."""

    def __init__(self, items: Sequence[Item], kind: str, vocabulary: CtcVocabulary | None, text: WhisperText | None,
                 max_tokens: int, augment=None):
        self.items, self.kind, self.vocabulary, self.text = list(items), kind, vocabulary, text
        self.max_tokens, self.augment = max_tokens, augment

    def __call__(self, samples: list) -> tuple:
        good = [s for s in samples if s[0] is not None]
        bad = [s[1] for s in samples if s[0] is None]
        if not good:
            return None, None, None, None, None, bad
        waves = [s[0] for s in good]
        indices = torch.tensor([s[1] for s in good], dtype=torch.int64)
        features, frames = features_of(waves, 30.0 if self.kind == "whisper" else None)
        if self.augment is not None and self.augment.spec_augment_prob:
            features = self._spec_augment(features, frames)
        texts = [self.items[i].utt.text for i in indices.tolist()]
        if self.kind == "ctc":
            # training items all fit the vocabulary (SpeechData.set_vocabulary); validation losses skip other characters
            ids = [self.vocabulary.encode_known(t) for t in texts] if self.vocabulary is not None else [[] for _ in texts]
            targets = torch.tensor([i for row in ids for i in row], dtype=torch.int64)
            lengths = torch.tensor([len(row) for row in ids], dtype=torch.int64)
        else:
            rows = [self.text.labels(t, self.max_tokens) for t in texts]
            lengths = torch.tensor([len(r) for r in rows], dtype=torch.int64)
            targets = torch.full((len(rows), int(lengths.max())), IGNORE, dtype=torch.int64)
            for r, row in enumerate(rows):
                targets[r, :len(row)] = torch.tensor(row)
        return features, frames, targets, lengths, indices, bad

    def _spec_augment(self, features: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        from ...audio.augment import spec_augment

        cfg = self.augment
        rng = np.random.default_rng(int(torch.randint(0, 2**31, ())))
        out = features.clone()
        for row in range(len(out)):
            if rng.random() < cfg.spec_augment_prob:
                n = int(frames[row])
                out[row, :, :n] = spec_augment(out[row, :, :n], rng, cfg.time_masks, max(1, int(cfg.time_width * n)),
                                               cfg.freq_masks, cfg.freq_width)
        return out


def decoder_inputs(targets: torch.Tensor) -> torch.Tensor:
    """Whisper's decoder input for labels [N, L]: the labels without their last position, IGNORE read as EOT."""
    tokens = targets[:, :-1].clone()
    tokens[tokens == IGNORE] = EOT
    return tokens


class SpeechData(TaskData):
    """Train/val utterances of the manifests a spec names; batches as SpeechCollate makes them."""

    item_kind = "utterances"

    def __init__(self, spec, kind: str, vocabulary: CtcVocabulary | None = None, text: WhisperText | None = None,
                 *, need_train: bool = True):
        t = spec.train
        super().__init__(batch_size=t.batch_size, eval_batch_size=spec.evaluation.batch_size,
                         num_workers=t.num_workers,
                         spec_keys={"train": "data.train_manifest", "val": "data.val_manifest"})
        self.spec, self.kind, self.vocabulary, self.text = spec, kind, vocabulary, text
        self.max_tokens = spec.model.max_tokens
        self.seed, self.bucketing = t.seed, spec.data.bucketing
        d = spec.data
        if d.train_manifest and need_train:
            self.train_items, bad = read_split(d.train_manifest, "data.train_manifest", spec)
            self.record_skipped("data.train_manifest", bad)
            if not self.train_items:
                raise DataError(f"data.train_manifest: every line of {d.train_manifest} was skipped, e.g. "
                                f"{next(iter(bad.values()), '?')}")
        if d.val_manifest:
            self.val_items, bad = read_split(d.val_manifest, "data.val_manifest", spec)
            self.record_skipped("data.val_manifest", bad)
            if not self.val_items:
                raise DataError(f"data.val_manifest: every line of {d.val_manifest} was skipped, e.g. "
                                f"{next(iter(bad.values()), '?')}")

    @property
    def train_texts(self) -> list[str]:
        return [it.utt.text for it in self.train_items]

    def set_vocabulary(self, vocabulary: CtcVocabulary) -> None:
        """The CTC vocabulary of the model; training transcripts with other characters are skipped (named)."""
        self.vocabulary = vocabulary
        known = set(vocabulary.characters)
        bad = {}
        for it in self.train_items:
            missing = sorted({c for c in it.utt.text if c not in known})
            if missing:
                bad[it.where] = (f"{it.where}: characters {missing} are not in the model's vocabulary (add them with "
                                 "model.vocabulary)")
        if bad:
            self.train_items = [it for it in self.train_items if it.where not in bad]
            self.record_skipped("data.train_manifest", bad)

    def where(self, item: Item) -> str:
        return item.where

    def find_unusable(self, items: list) -> dict[str, str]:
        return {}  # read_manifest has checked every file's header already

    def make_dataset(self, items: list, train: bool) -> Dataset:
        augment = self.spec.data.augment if train else None
        if augment is not None and not (augment.speed_prob or augment.noise_prob):
            augment = None
        return WaveDataset(items, augment)

    def collate_for(self, items: list, train: bool) -> SpeechCollate:
        return SpeechCollate(items, self.kind, self.vocabulary, self.text, self.max_tokens,
                             self.spec.data.augment if train else None)

    def model_inputs(self, batch: tuple) -> tuple[torch.Tensor, ...]:
        features = batch[0]
        if self.kind == "whisper":
            return features, decoder_inputs(batch[2])
        return (features,)

    def loader(self, items: list, train: bool, batch_size: int) -> DataLoader:
        """Batches of one split; training batches of similar duration when data.bucketing."""
        dataset = self.make_dataset(items, train)
        settings = dict(collate_fn=self.collate_for(items, train), num_workers=self.num_workers,
                        persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available())
        if not train:
            return DataLoader(dataset, batch_size=batch_size, shuffle=False, **settings)
        settings["drop_last"] = len(items) > batch_size
        if not self.bucketing or self.kind == "whisper":  # whisper reads 30 s windows: nothing to bucket
            return ResumableLoader(dataset, batch_size, **settings)
        lengths = [int(round(it.utt.duration * 100)) for it in items]
        return bucketed_loader(dataset, lengths, batch_size, self.seed, **settings)


def eval_order(items: Sequence[Item]) -> list[Item]:
    """Items sorted by duration (batches with little padding); results go back to manifest order by index."""
    return sorted(items, key=lambda it: it.utt.duration)


def require_manifest(spec, key: str = "val") -> str:
    value = getattr(spec.data, f"{key}_manifest")
    if not value:
        raise SpecError(f"data.{key}_manifest is not set; this verb needs it, e.g. data.{key}_manifest={key}.json "
                        "(a NeMo manifest; build one with tkit speech_to_text dataset_convert)")
    return value
