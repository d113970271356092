"""Token classification (named entities): words tagged in IOB2 from CoNLL or NeMo files, on a pretrained
transformer encoder (default: the offline MiniLM). Word/tag files: formats.py; sub-word alignment and entity
spans: align.py; scores: metrics.text.entity_report (seqeval, strict IOB2)."""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from ...data.items import skipped_report
from ...errors import DataError
from ...metrics.text import entity_report
from ...text.data import read_inference_inputs, write_jsonl
from ...text.task import TextTask
from ..base import Predictor
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
    data_class = TokenClassificationData
    file_suffix = ".txt"
    description = "token classification / named entities (CoNLL or NeMo files, IOB1/IOB2/BIOES tags)"

    # -- model ---------------------------------------------------------------------------------------------
    def build_training_module(self, spec: TokenClassificationSpec, data: TokenClassificationData):
        net, meta, report = self.training_net(spec, data)
        return TokenClassificationModule(net, meta, spec.train), report

    # -- evaluate ------------------------------------------------------------------------------------------
    def evaluate(self, spec: TokenClassificationSpec, predictor: Predictor, data: TokenClassificationData,
                 out_dir: Path) -> dict[str, Any]:
        self.require_eval_data(spec)
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
        write_jsonl(out_dir / "val_predictions.jsonl", rows)
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
            "model": predictor.info,
        })
        return metrics

    # -- inference -----------------------------------------------------------------------------------------
    def inference(self, spec: TokenClassificationSpec, predictor: Predictor, out_dir: Path) -> dict[str, Any]:
        meta = predictor.meta
        classes = list(meta.classes)
        tokenizer = self.tokenizer(meta)
        inputs, passed_over = read_inference_inputs(spec.inference)
        examples, unusable = examples_from_text(tokenizer, inputs, spec.inference.split_punctuation)
        passed_over.bad.update(unusable)
        predicted = predict_words(predictor, examples, classes, tokenizer.pad_id, spec.inference.batch_size)
        rows, cut, cut_sentences, entities = [], 0, 0, 0
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
            rows.append(row)
        predictions = write_jsonl(out_dir / "predictions.jsonl", rows)
        if cut:
            log.warning("inference.file: %d word(s) in %d line(s) have no token (beyond model.max_length=%d tokens, "
                        "or dropped by the tokenizer); they are tagged O with no score", cut, cut_sentences,
                        tokenizer.max_length)
        return self.inference_summary(predictor, len(examples), passed_over, predictions, entities=entities,
                                      words_without_prediction={"count": cut, "sentences": cut_sentences,
                                                                "max_length": tokenizer.max_length})

    # -- dataset_convert -----------------------------------------------------------------------------------
    def convert(self, spec: TokenClassificationSpec, out: Path, files: dict[str, str]) -> dict[str, Any]:
        """The files (CoNLL or NeMo, any tag scheme) -> CoNLL or NeMo files in dataset_convert.output_scheme;
        sentences with problems are reported, not copied."""
        d, c = spec.data, spec.dataset_convert
        labels = read_labels_file(d.labels_file) if d.labels_file else None
        report: dict[str, Any] = {"output_format": c.output_format, "output_scheme": c.output_scheme}
        for split in files:
            tagged = read_split(d, split, labels)
            if c.output_format == "conll":
                written = [write_conll(tagged.sentences, out / f"{split}.txt", c.output_scheme)]
            else:
                written = list(write_nemo(tagged.sentences, out / f"text_{split}.txt", out / f"labels_{split}.txt",
                                          c.output_scheme))
            types = Counter(t for s in tagged.sentences for t, _, _ in spans_from_iob2(s.tags))
            report[split] = {"source": files[split], "files": [str(f) for f in written],
                             "tag_scheme_read": tagged.scheme, "sentences": len(tagged.sentences),
                             "entities": dict(sorted(types.items())), "skipped": skipped_report(tagged.skipped),
                             "repaired": {"count": len(tagged.repaired), "sentences": dict(tagged.repaired)},
                             "tag_problems": dict(tagged.counts)}
            if tagged.skipped:
                log.warning("data.%s_file: left out %d sentence(s), e.g. %s: %s", split, len(tagged.skipped),
                            *next(iter(tagged.skipped.items())))
            log.info("%s (%s): %d sentences -> %s", files[split], tagged.scheme,
                     len(tagged.sentences), ", ".join(str(f) for f in written))
        return report


TASK = TokenClassificationTask()
