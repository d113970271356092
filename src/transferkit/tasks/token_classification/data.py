"""Labelled sentences for token classification: CoNLL or NeMo files read into IOB2 (formats.py), words
tokenized into pieces with the label on each word's first piece (align.py), and the DataModule.

Every sentence that cannot be used is named `file:line` with the reason and left out (formats.py's rules);
words that model.max_length cuts off are counted per split and reported, never dropped silently: training
does not see them, evaluate scores them as predicted O.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ...data.module import split_validation
from ...engine.meta import ModelMeta
from ...errors import DataError, SpecError
from ...text.data import TextCollate, TextData, TextExample, no_token
from ...text.tokenizer import TextTokenizer
from .align import WordTags, align_labels, word_tags
from .formats import OUTSIDE, Sentence, TaggedData, labels_from_sentences, parse_tag, read_conll, read_labels_file, \
    read_nemo
from .spec import TokDataConfig, TokenClassificationSpec

log = logging.getLogger("transferkit")


@dataclass(frozen=True)
class TokenExample(TextExample):
    """A tokenized sentence: `target` holds one label id per token (first pieces only), `words` and `tags` the
    sentence as read (tags: IOB2 truth, empty for inference), `word_ids` each token's word (None: special)."""

    words: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    word_ids: tuple[int | None, ...] = ()
    offsets: tuple[tuple[int, int], ...] = ()  # inference: each word's characters in `text`


def input_format(d: TokDataConfig) -> str:
    """conll or nemo, as data.format says (auto: nemo when a labels file of NeMo's pair is given)."""
    for split in ("train", "val"):
        if getattr(d, f"{split}_labels") and not getattr(d, f"{split}_file"):
            raise SpecError(f"data.{split}_labels is set but data.{split}_file is not; NeMo's text file goes in "
                            f"data.{split}_file")
    paired = [k for k in ("train_labels", "val_labels") if getattr(d, k)]
    fmt = d.format if d.format != "auto" else ("nemo" if paired else "conll")
    if fmt == "conll" and paired:
        raise SpecError(f"data.{paired[0]} is set but data.format=conll reads tags from the same file; drop "
                        f"data.{paired[0]} or set data.format=nemo")
    return fmt


def read_split(d: TokDataConfig, split: str, labels: Sequence[str] | None) -> TaggedData:
    """data.<split>_file (and, for NeMo, data.<split>_labels) -> its usable sentences in IOB2."""
    key = f"data.{split}_file"
    path = getattr(d, f"{split}_file")
    if input_format(d) == "conll":
        return read_conll(path, key, scheme=d.tag_scheme, invalid_tags=d.invalid_tags, labels=labels)
    tags = getattr(d, f"{split}_labels")
    if not tags:
        raise SpecError(f"data.format=nemo pairs {key} with data.{split}_labels, which is not set; give the tags "
                        f"file, e.g. data.{split}_labels=labels_{split}.txt")
    return read_nemo(path, tags, key, f"data.{split}_labels", scheme=d.tag_scheme, invalid_tags=d.invalid_tags,
                     labels=labels)


def stratum(example: TokenExample) -> str:
    """What the validation hold-out is stratified by: the sentence's first entity type ("" for none)."""
    return next((parse_tag(t)[1] for t in example.tags if t != OUTSIDE), "")


def encode_sentences(tokenizer: TextTokenizer, sentences: Sequence[Sentence], index: dict[str, int]
                     ) -> tuple[list[TokenExample], dict[str, int]]:
    """Sentences -> TokenExamples (labels on first pieces) and counts of words that got no token:
    {"truncated_words", "truncated_sentences", "empty_words"}."""
    encodings = tokenizer.encode_words([s.words for s in sentences])
    examples, counts = [], {"truncated_words": 0, "truncated_sentences": 0, "empty_words": 0}
    for sentence, encoding in zip(sentences, encodings):
        word_ids = tuple(encoding.word_ids)
        alignment = align_labels(word_ids, [index[t] for t in sentence.tags])
        counts["truncated_words"] += len(alignment.truncated)
        counts["truncated_sentences"] += bool(alignment.truncated)
        counts["empty_words"] += len(alignment.empty)
        examples.append(TokenExample(sentence.where, tuple(encoding.ids), tuple(alignment.labels),
                                     " ".join(sentence.words), sentence.words, sentence.tags, word_ids))
    return examples, counts


def predict_words(predictor, examples: Sequence[TokenExample], classes: Sequence[str], pad_id: int,
                  batch_size: int) -> list[WordTags]:
    """The predictor's tag and score for every word of every example (in input order), batched by length."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].ids))
    collate = TextCollate(pad_id, "tokens")
    found: list[WordTags | None] = [None] * len(examples)
    for start in range(0, len(order), batch_size):
        chosen = order[start:start + batch_size]
        ids, mask, _, _ = collate([examples[i] for i in chosen])
        logits = predictor(ids, mask)[0]
        logits = logits if isinstance(logits, torch.Tensor) else torch.as_tensor(logits)
        for row, i in enumerate(chosen):
            e = examples[i]
            found[i] = word_tags(logits[row], e.word_ids, len(e.words), classes)
    return found  # type: ignore[return-value]


class TokenClassificationData(TextData):
    """Train/val sentences of token classification. With `meta` (evaluate, export) the tag list and tokenizer are
    the model's; otherwise the tags come from data.labels_file, else from the entity types in data.train_file."""

    def __init__(self, spec: TokenClassificationSpec, tokenizer: TextTokenizer, meta: ModelMeta | None = None):
        d = spec.data
        self.spec = spec
        self.has_train = bool(d.train_file)
        input_format(d)  # key combinations refused before any file is read
        if meta is not None:
            classes, origin = list(meta.classes), "the model"
        elif d.labels_file:
            classes, origin = read_labels_file(d.labels_file), "data.labels_file"
        else:
            classes, origin = None, "data.train_file"
        if classes is None and not self.has_train:
            raise SpecError("data.train_file is not set; training needs it, e.g. data.train_file=train.txt")
        train = read_split(d, "train", classes) if self.has_train else None
        if classes is None:
            classes = labels_from_sentences(train.sentences)
        if classes[0] != OUTSIDE or len(set(classes)) != len(classes):
            raise SpecError(f"{origin} gives the tag list {classes}: it must start with O and name each tag once")
        if meta is None and len(classes) < 3:
            raise DataError(f"{origin} names no entity type (every tag is O); a tagger needs at least one, e.g. B-PER")
        self.classes, self.origin = classes, origin
        self.index = {tag: i for i, tag in enumerate(classes)}
        super().__init__(tokenizer=tokenizer, target_kind="tokens", num_labels=len(classes),
                         batch_size=spec.train.batch_size, eval_batch_size=spec.evaluation.batch_size,
                         num_workers=spec.train.num_workers, seed=spec.train.seed, bucketing=d.length_bucketing,
                         spec_keys={"train": "data.train_file", "val": "data.val_file" if d.val_file else
                                    f"data.train_file (val_split={d.val_split})"})
        self.problems: dict[str, dict[str, Any]] = {}  # spec key -> scheme, tag problems, repaired, cut words
        train_examples = self._examples(train, "data.train_file") if train is not None else []
        if d.val_file:
            self.val_items = self._examples(read_split(d, "val", classes), "data.val_file")
            self.train_items = train_examples
        else:
            self.train_items, self.val_items = split_validation(train_examples, d.val_split, spec.train.seed, stratum)

    def _examples(self, tagged: TaggedData, key: str) -> list[TokenExample]:
        self.record_skipped(key, tagged.skipped)
        examples, cut = encode_sentences(self.tokenizer, tagged.sentences, self.index)
        self.problems[key] = {"tag_scheme": tagged.scheme, "tag_problems": dict(tagged.counts),
                              "repaired": {"count": len(tagged.repaired), "sentences": dict(tagged.repaired)}, **cut}
        if tagged.repaired:
            self.warnings.append(f"{key}: {len(tagged.repaired)} sentence(s) with an I- tag that continues nothing "
                                 "were repaired (data.invalid_tags=repair), e.g. " + ": ".join(
                                     next(iter(tagged.repaired.items()))))
            log.warning(self.warnings[-1])
        if cut["truncated_words"]:
            self.warnings.append(
                f"{key}: {cut['truncated_words']} word(s) in {cut['truncated_sentences']} sentence(s) lie beyond "
                f"model.max_length={self.tokenizer.max_length} tokens; training does not see them and evaluate scores "
                "them as predicted O (raise model.max_length or split long sentences)")
            log.warning(self.warnings[-1])
        if cut["empty_words"]:
            self.warnings.append(f"{key}: {cut['empty_words']} word(s) have no token at all (e.g. control or "
                                 "zero-width characters); they are scored as predicted O")
            log.warning(self.warnings[-1])
        return examples

    def after_scan(self, split: str) -> None:
        if split != "train" or not self.has_train:
            return
        seen = {parse_tag(t)[1] for e in self.train_items for t in e.tags if t != OUTSIDE}
        missing = [t for t in dict.fromkeys(parse_tag(c)[1] for c in self.classes[1:]) if t not in seen]
        if missing:
            self.warnings.append(f"entity type(s) {', '.join(missing)} have no usable training sentence; the model "
                                 "cannot learn them")
            log.warning(self.warnings[-1])


def examples_from_text(tokenizer: TextTokenizer, inputs: Sequence[tuple[str, str]], punctuation: bool
                       ) -> tuple[list[TokenExample], dict[str, str]]:
    """(where, raw text) inputs -> TokenExamples of their words with character offsets, and {where: reason} of
    inputs the tokenizer finds nothing in."""
    from .align import split_words

    split = [split_words(text, punctuation) for _, text in inputs]
    encodings = tokenizer.encode_words([words for words, _ in split]) if split else []
    floor = tokenizer.special_token_count()
    examples, bad = [], {}
    for (where, text), (words, offsets), encoding in zip(inputs, split, encodings):
        if len(encoding.ids) <= floor:
            bad[where] = no_token(text)
            continue
        examples.append(TokenExample(where, tuple(encoding.ids), (), text, tuple(words), (),
                                     tuple(encoding.word_ids), tuple(offsets)))
    return examples, bad

