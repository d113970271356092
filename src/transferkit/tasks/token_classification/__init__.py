"""Token classification (named entities): words tagged in IOB2 from CoNLL or NeMo files, on a pretrained
transformer encoder (default: the offline MiniLM). Word/tag files: formats.py; sub-word alignment and entity
spans: align.py; scores: metrics.text.entity_report (seqeval, strict IOB2)."""
from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from ...data.items import skipped_report
from ...engine.meta import ModelMeta
from ...errors import DataError, SpecError
from ...io import atomic_write_json, atomic_write_text
from ...metrics.text import entity_report
from ...text.task import TextTask
from ..base import ExportGraph, Predictor
from .align import entity_spans
from .data import TokenClassificationData, examples_from_text, predict_words, read_split
from .formats import read_labels_file, spans_from_iob2, write_conll, write_nemo
from .module import TokenClassificationModule
from .spec import TokenClassificationSpec

log = logging.getLogger("transferkit")

TRUNCATED_NOTE = ("words without a token (beyond model.max_length tokens, or dropped by the tokenizer) get no "
                  "prediction: they are scored as predicted O")


def _round(score: float | None) -> float | None:
    return None if score is None else round(float(score), 4)


class TokenClassificationTask(TextTask):
    name = "token_classification"
    spec_class = TokenClassificationSpec
    monitor = "val/f1"
    monitor_mode = "max"
    headline = "f1"
    head = "token"
    description = "token classification / named entities (CoNLL or NeMo files, IOB1/IOB2/BIOES tags)"

    @property
    def extra_verbs(self):
        return {"dataset_convert": self.dataset_convert}

    # -- data and model ------------------------------------------------------------------------------------
    def build_data(self, spec: TokenClassificationSpec, meta: ModelMeta | None = None) -> TokenClassificationData:
        if meta is not None:
            return TokenClassificationData(spec, self.tokenizer(meta), meta)
        from ...text.tokenizer import TextTokenizer

        source = self.text_source(spec.model)
        self.check_max_length(spec.model, source)
        tokenizer = TextTokenizer(source.tokenizer_json, spec.model.max_length, spec.model.lowercase)
        return TokenClassificationData(spec, tokenizer)

    def build_training_module(self, spec: TokenClassificationSpec, data: TokenClassificationData):
        if not data.has_train:
            raise SpecError("data.train_file is not set; training needs it, e.g. data.train_file=train.txt")
        source = self.text_source(spec.model)
        net, meta, report = self.initial_net(spec.model, source, data.classes)
        return TokenClassificationModule(net, meta, spec.train), report

    def export_graph(self, net, meta: ModelMeta, spec) -> ExportGraph:
        """The raw logits, [batch, length, tags]: one row per token, so the length axis is named too."""
        return ExportGraph(net, self.output_names, output_axes={"logits": {0: "batch", 1: "length"}})

    # -- evaluate ------------------------------------------------------------------------------------------
    def evaluate(self, spec: TokenClassificationSpec, predictor: Predictor, data: TokenClassificationData,
                 out_dir: Path) -> dict[str, Any]:
        if not spec.data.val_file and not spec.data.train_file:
            raise SpecError("evaluate needs data.val_file (or data.train_file, whose held-out val_split it scores)")
        classes = list(predictor.meta.classes)
        data.scan("val")
        examples = data.val_items
        if not examples:
            raise DataError(f"{data.spec_keys['val']} has no usable sentences to evaluate; fix the ones listed under "
                            "skipped_sentences")
        predicted = predict_words(predictor, examples, classes, data.tokenizer.pad_id, spec.evaluation.batch_size)
        true_tags = [list(e.tags) for e in examples]
        pred_tags = [p.tags for p in predicted]
        metrics: dict[str, Any] = entity_report(true_tags, pred_tags)
        words = sum(len(t) for t in true_tags)
        right = sum(a == b for t, p in zip(true_tags, pred_tags) for a, b in zip(t, p))
        missing = [(e, p.missing) for e, p in zip(examples, predicted) if p.missing]
        unseen = sum(len(gone) for _, gone in missing)
        lost = sum(1 for e, gone in missing for _, start, end in spans_from_iob2(e.tags)
                   if any(start <= w < end for w in gone))
        if missing:
            log.warning("%d word(s) of %d sentence(s) got no prediction (cut by model.max_length=%d, or no token); "
                        "they are scored as predicted O, %d true entit(ies) touch them", unseen, len(missing),
                        data.tokenizer.max_length, lost)
        true_types = Counter(t for tags in true_tags for t, _, _ in spans_from_iob2(tags))
        pred_types = Counter(t for tags in pred_tags for t, _, _ in spans_from_iob2(tags))
        rows = [{"where": e.where, "words": list(e.words), "true": list(e.tags), "predicted": p.tags,
                 **({"words_without_prediction": p.missing} if p.missing else {})} for e, p in zip(examples, predicted)]
        atomic_write_text(out_dir / "val_predictions.jsonl",
                          "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        key = "data.val_file" if spec.data.val_file else "data.train_file"
        read = data.problems.get(key, {})
        metrics.update({
            "token_accuracy": right / words if words else 0.0,
            "labels": classes,
            "tag_scheme": read.get("tag_scheme"),
            "num_sentences": len(examples),
            "counts": {"sentences": len(examples), "words": words, "true_entities": dict(true_types),
                       "predicted_entities": dict(pred_types)},
            "words_without_prediction": {"count": unseen, "sentences": len(missing),
                                         "true_entities_touched": lost, "max_length": data.tokenizer.max_length,
                                         "note": TRUNCATED_NOTE},
            f"skipped_{self.item_kind}": skipped_report(data.skipped),
            "repaired": read.get("repaired", {"count": 0, "sentences": {}}),
            "tag_problems": read.get("tag_problems", {}),
            "warnings": list(data.warnings),
            "model": {"file": str(predictor.source), "runtime": predictor.kind},
        })
        return metrics

    # -- inference -----------------------------------------------------------------------------------------
    def inference(self, spec: TokenClassificationSpec, predictor: Predictor, out_dir: Path) -> dict[str, Any]:
        # Reading the inputs (text or JSON lines, bad lines named) is what text_classification does; its reader
        # only looks at spec.inference.{file, format, text_field}, which this spec has too.
        from ..text_classification import TASK as text_classification

        meta = predictor.meta
        classes = list(meta.classes)
        tokenizer = self.tokenizer(meta)
        inputs, bad, blank = text_classification.read_inputs(spec)
        examples, unusable = examples_from_text(tokenizer, inputs, spec.inference.split_punctuation)
        bad.update(unusable)
        predicted = predict_words(predictor, examples, classes, tokenizer.pad_id, spec.inference.batch_size)
        lines, cut, cut_sentences, entities = [], 0, 0, 0
        for example, words in zip(examples, predicted):
            spans = entity_spans(example.words, words.tags, words.scores, text=example.text, offsets=example.offsets)
            row: dict[str, Any] = {
                "text": example.text,
                "entities": [{"type": s["type"], "start": s["start"], "end": s["end"], "text": s["text"],
                              "score": _round(s["score"])} for s in spans],
                "words": [{"word": w, "start": a, "end": b, "tag": t, "score": _round(s)} for w, (a, b), t, s in
                          zip(example.words, example.offsets, words.tags, words.scores)],
                "where": example.where,
            }
            entities += len(spans)
            if words.missing:
                row["words_without_prediction"] = len(words.missing)
                cut += len(words.missing)
                cut_sentences += 1
            lines.append(json.dumps(row, ensure_ascii=False) + "\n")
        predictions = atomic_write_text(out_dir / "predictions.jsonl", "".join(lines))
        if bad:
            log.warning("inference.file: skipped %d line(s), e.g. %s: %s", len(bad), *next(iter(bad.items())))
        if blank:
            log.info("inference.file: %d blank line(s) ignored", blank)
        if cut:
            log.warning("inference.file: %d word(s) in %d line(s) have no token (beyond model.max_length=%d tokens, "
                        "or dropped by the tokenizer); they are tagged O with no score", cut, cut_sentences,
                        tokenizer.max_length)
        return {self.item_kind: len(examples), f"skipped_{self.item_kind}": skipped_report(bad),
                "blank_lines": blank, "entities": entities,
                "words_without_prediction": {"count": cut, "sentences": cut_sentences,
                                             "max_length": tokenizer.max_length},
                "predictions": str(predictions), "model": {"file": str(predictor.source), "runtime": predictor.kind}}

    # -- dataset_convert -----------------------------------------------------------------------------------
    def dataset_convert(self, spec: TokenClassificationSpec, results: Path | None, model=None) -> dict[str, Any]:
        """data.train_file / data.val_file (CoNLL or NeMo, any tag scheme) -> CoNLL or NeMo files in
        dataset_convert.output_scheme; sentences with problems are reported, not copied."""
        d, c = spec.data, spec.dataset_convert
        out = Path(c.output_dir) if c.output_dir else (results / "converted" if results else None)
        if out is None:
            raise SpecError("dataset_convert needs dataset_convert.output_dir=DIR (or -r DIR)")
        splits = [split for split in ("train", "val") if getattr(d, f"{split}_file")]
        if not splits:
            raise SpecError("dataset_convert needs data.train_file and/or data.val_file to convert")
        labels = read_labels_file(d.labels_file) if d.labels_file else None
        report: dict[str, Any] = {"output_dir": str(out), "output_format": c.output_format,
                                  "output_scheme": c.output_scheme}
        for split in splits:
            tagged = read_split(d, split, labels)
            if c.output_format == "conll":
                files = [write_conll(tagged.sentences, out / f"{split}.txt", c.output_scheme)]
            else:
                files = list(write_nemo(tagged.sentences, out / f"text_{split}.txt", out / f"labels_{split}.txt",
                                        c.output_scheme))
            types = Counter(t for s in tagged.sentences for t, _, _ in spans_from_iob2(s.tags))
            report[split] = {"source": getattr(d, f"{split}_file"), "files": [str(f) for f in files],
                             "tag_scheme_read": tagged.scheme, "sentences": len(tagged.sentences),
                             "entities": dict(sorted(types.items())), "skipped": skipped_report(tagged.skipped),
                             "repaired": {"count": len(tagged.repaired), "sentences": dict(tagged.repaired)},
                             "tag_problems": dict(tagged.counts)}
            if tagged.skipped:
                log.warning("data.%s_file: left out %d sentence(s), e.g. %s: %s", split, len(tagged.skipped),
                            *next(iter(tagged.skipped.items())))
            log.info("%s (%s): %d sentences -> %s", getattr(d, f"{split}_file"), tagged.scheme,
                     len(tagged.sentences), ", ".join(str(f) for f in files))
        if results is not None:
            atomic_write_json(results / "dataset_convert.json", report)
        return report


TASK = TokenClassificationTask()
