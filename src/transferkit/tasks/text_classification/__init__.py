"""Text classification: sentences (TSV, CSV, JSON lines) -> one label (softmax) or several (sigmoid), on a
pretrained transformer encoder (default: the offline MiniLM)."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...data.items import skipped_report, usable_batches
from ...engine.meta import ModelMeta
from ...errors import DataError, SpecError
from ...io import atomic_write_json, atomic_write_text
from ...metrics.plots import save_confusion_png
from ...metrics.text import classification_report, multilabel_report
from ...spec import require_path
from ...text.data import TextCollate, TextExample, read_lines
from ...text.task import TextTask
from ..base import Predictor
from .data import (LabelResolver, TextClassificationData, file_format, read_label_names, read_rows, resolve_rows,
                   sorted_labels)
from .module import TextClassificationModule
from .spec import TextClassificationSpec

log = logging.getLogger("transferkit")


def thresholds_for(spec: TextClassificationSpec, classes: list[str]) -> np.ndarray:
    """The decision threshold of each label (multi-label): inference.thresholds, else inference.threshold."""
    inf = spec.inference
    unknown = [name for name in inf.thresholds if name not in classes]
    if unknown:
        raise SpecError(f"inference.thresholds names label(s) {', '.join(unknown)} the model does not have; its labels "
                        f"are {', '.join(classes)}")
    return np.array([inf.thresholds.get(name, inf.threshold) for name in classes], dtype=np.float32)


def _model_info(predictor: Predictor) -> dict[str, str]:
    return {"file": str(predictor.source), "runtime": predictor.kind}


class TextClassificationTask(TextTask):
    name = "text_classification"
    spec_class = TextClassificationSpec
    monitor = "val/f1_macro"
    monitor_mode = "max"
    headline = "accuracy"
    head = "sequence"
    description = "text classification (TSV, CSV or JSON lines; single- or multi-label)"

    @property
    def extra_verbs(self):
        return {"dataset_convert": self.dataset_convert}

    # -- data and model ------------------------------------------------------------------------------------
    def build_data(self, spec: TextClassificationSpec, meta: ModelMeta | None = None) -> TextClassificationData:
        if meta is not None:
            return TextClassificationData(spec, self.tokenizer(meta), meta)
        from ...text.tokenizer import TextTokenizer

        source = self.text_source(spec.model)
        self.check_max_length(spec.model, source)
        tokenizer = TextTokenizer(source.tokenizer_json, spec.model.max_length, spec.model.lowercase)
        return TextClassificationData(spec, tokenizer)

    def build_training_module(self, spec: TextClassificationSpec, data: TextClassificationData):
        if not data.has_train:
            raise SpecError("data.train_file is not set; training needs it, e.g. data.train_file=train.tsv")
        source = self.text_source(spec.model)
        net, meta, report = self.initial_net(spec.model, source, data.classes, multi_label=spec.model.multi_label)
        if bool(meta.arch.get("multi_label")) != spec.model.multi_label:  # a pruned model keeps what it was
            raise SpecError(f"model.pruned: {spec.model.pruned} was trained with multi_label="
                            f"{bool(meta.arch.get('multi_label'))}; set model.multi_label the same")
        thresholds = torch.from_numpy(thresholds_for(spec, list(meta.classes)))
        return TextClassificationModule(net, meta, spec.train, thresholds), report

    def spec_for_model(self, spec: TextClassificationSpec, meta: ModelMeta) -> TextClassificationSpec:
        spec = super().spec_for_model(spec, meta)
        multi = bool(meta.arch.get("multi_label"))
        if spec.model.multi_label == multi:
            return spec
        return spec.model_copy(update={"model": spec.model.model_copy(update={"multi_label": multi})})

    # -- evaluate ------------------------------------------------------------------------------------------
    def _scores(self, logits: torch.Tensor, multi_label: bool) -> torch.Tensor:
        logits = logits.float()
        return torch.sigmoid(logits) if multi_label else torch.softmax(logits, 1)

    def evaluate(self, spec: TextClassificationSpec, predictor: Predictor, data: TextClassificationData,
                 out_dir: Path) -> dict[str, Any]:
        if not spec.data.val_file and not spec.data.train_file:
            raise SpecError("evaluate needs data.val_file (or data.train_file, whose held-out val_split it scores)")
        meta = predictor.meta
        classes = list(meta.classes)
        multi = bool(meta.arch.get("multi_label"))
        loader = data.val_dataloader()
        scores, targets = [], []
        for ids, mask, target in usable_batches(loader, data.skipped):
            scores.append(self._scores(predictor(ids, mask)[0], multi))
            targets.append(target)
        if not scores:
            raise DataError(f"{data.spec_keys['val']} has no usable sentences to evaluate")
        probs, true = torch.cat(scores).numpy(), torch.cat(targets).numpy()
        examples: list[TextExample] = data.val_items
        rows = []
        if multi:
            thresholds = thresholds_for(spec, classes)
            pred = probs >= thresholds
            metrics = multilabel_report(true > 0.5, pred, classes)
            metrics["thresholds"] = dict(zip(classes, thresholds.tolist()))
            together = (true > 0.5).astype(np.int64).T @ pred.astype(np.int64)  # rows true, columns predicted
            title = f"multi-label: rows true, columns predicted; exact {metrics['accuracy']:.3f} on {len(true)}"
            save_confusion_png(together, classes, out_dir / "confusion_matrix.png", title)
            for example, p, t, s in zip(examples, pred, true, probs):
                rows.append({"where": example.where, "text": example.text,
                             "true": [c for c, v in zip(classes, t) if v > 0.5],
                             "predicted": [c for c, v in zip(classes, p) if v],
                             "scores": {c: round(float(v), 4) for c, v in zip(classes, s)}})
            true_counts = dict(zip(classes, (true > 0.5).sum(0).tolist()))
            pred_counts = dict(zip(classes, pred.sum(0).tolist()))
        else:
            pred = probs.argmax(1)
            metrics = classification_report(true, pred, classes)
            save_confusion_png(np.array(metrics["confusion"]), classes, out_dir / "confusion_matrix.png",
                               f"accuracy {metrics['accuracy']:.3f}, macro F1 {metrics['f1_macro']:.3f} on {len(true)} "
                               "sentences")
            for example, p, t, s in zip(examples, pred, true, probs):
                rows.append({"where": example.where, "text": example.text, "true": classes[int(t)],
                             "predicted": classes[int(p)], "score": round(float(s[p]), 4)})
            true_counts = {c: int((true == i).sum()) for i, c in enumerate(classes)}
            pred_counts = {c: int((pred == i).sum()) for i, c in enumerate(classes)}
        atomic_write_text(out_dir / "val_predictions.jsonl",
                          "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        metrics.update({
            "labels": classes, "multi_label": multi, "num_sentences": int(len(true)),
            "counts": {"sentences": int(len(true)), "true": true_counts, "predicted": pred_counts},
            f"skipped_{self.item_kind}": skipped_report(data.skipped),
            "warnings": list(data.warnings), "model": _model_info(predictor),
        })
        atomic_write_json(out_dir / "confusion_matrix.json", {"labels": classes, "rows_true_cols_predicted":
                                                              metrics["confusion"]})
        return metrics

    # -- inference -----------------------------------------------------------------------------------------
    def read_inputs(self, spec: TextClassificationSpec) -> tuple[list[tuple[str, str]], dict[str, str], int]:
        """(where, text) of every input of inference.file, {where: reason} of unusable lines, blank lines."""
        inf = spec.inference
        path = require_path("inference.file", inf.file, "file")
        fmt = inf.format if inf.format != "auto" else ("jsonl" if path.suffix.lower() in (".jsonl", ".json",
                                                                                        ".ndjson") else "text")
        inputs, bad, blank = [], {}, 0
        for number, line, problem in read_lines(path, "inference.file"):
            where = f"{path}:{number}"
            if problem:
                bad[where] = problem
                continue
            if not line.strip():
                blank += 1
                continue
            if fmt == "text":
                inputs.append((where, line.strip()))
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                bad[where] = f"not JSON ({e.msg} at column {e.colno})"
                continue
            text = record.get(inf.text_field) if isinstance(record, dict) else None
            if not isinstance(text, str) or not text.strip():
                bad[where] = (f"no {inf.text_field!r} text field (inference.text_field)" if not isinstance(text, str)
                              else "empty text")
                continue
            inputs.append((where, text.strip()))
        return inputs, bad, blank

    def inference(self, spec: TextClassificationSpec, predictor: Predictor, out_dir: Path) -> dict[str, Any]:
        meta = predictor.meta
        classes = list(meta.classes)
        multi = bool(meta.arch.get("multi_label"))
        thresholds = thresholds_for(spec, classes) if multi else None
        tokenizer = self.tokenizer(meta)
        inputs, bad, blank = self.read_inputs(spec)
        encodings = tokenizer.encode([text for _, text in inputs])
        floor = tokenizer.special_token_count()
        examples = []
        for i, ((where, text), encoding) in enumerate(zip(inputs, encodings)):
            if len(encoding.ids) <= floor:
                bad[where] = f"the tokenizer finds no token in {text[:40]!r}"
            else:
                examples.append(TextExample(where, tuple(encoding.ids), i, text))
        # Batches of similar lengths (less padding); the outputs go back to input order.
        order = sorted(range(len(examples)), key=lambda i: len(examples[i].ids))
        collate = TextCollate(tokenizer.pad_id, "class")
        probs = np.zeros((len(examples), len(classes)), dtype=np.float32)
        size = spec.inference.batch_size
        for start in range(0, len(order), size):
            chosen = order[start:start + size]
            ids, mask, _, _ = collate([examples[i] for i in chosen])
            probs[chosen] = self._scores(predictor(ids, mask)[0], multi).numpy()
        k = min(spec.inference.top_k, len(classes))
        lines = []
        for example, p in zip(examples, probs):
            row: dict[str, Any] = {"text": example.text}
            if multi:
                row["labels"] = [c for c, v, t in zip(classes, p, thresholds) if v >= t]
                row["scores"] = {c: round(float(v), 4) for c, v in zip(classes, p)}
            else:
                best = np.argsort(-p, kind="stable")[:k]
                row.update({"label": classes[best[0]], "score": round(float(p[best[0]]), 4),
                            "top_k": [{"label": classes[j], "score": round(float(p[j]), 4)} for j in best]})
            row["where"] = example.where
            lines.append(json.dumps(row, ensure_ascii=False) + "\n")
        predictions = atomic_write_text(out_dir / "predictions.jsonl", "".join(lines))
        if bad:
            log.warning("inference.file: skipped %d line(s), e.g. %s: %s", len(bad), *next(iter(bad.items())))
        if blank:
            log.info("inference.file: %d blank line(s) ignored", blank)
        return {self.item_kind: len(examples), f"skipped_{self.item_kind}": skipped_report(bad),
                "blank_lines": blank, "multi_label": multi, "predictions": str(predictions),
                **({"thresholds": dict(zip(classes, thresholds.tolist()))} if multi else {}),
                "model": _model_info(predictor)}

    # -- dataset_convert -----------------------------------------------------------------------------------
    def dataset_convert(self, spec: TextClassificationSpec, results: Path | None, model=None) -> dict[str, Any]:
        """data.train_file / data.val_file (any format, integer labels via data.labels_file) -> TSV with label
        names, JSON lines, or TAO's integer TSV + labels.txt; bad rows are reported, not copied."""
        d, c = spec.data, spec.dataset_convert
        out = Path(c.output_dir) if c.output_dir else (results / "converted" if results else None)
        if out is None:
            raise SpecError("dataset_convert needs dataset_convert.output_dir=DIR (or -r DIR)")
        files = {split: getattr(d, f"{split}_file") for split in ("train", "val") if getattr(d, f"{split}_file")}
        if not files:
            raise SpecError("dataset_convert needs data.train_file and/or data.val_file to convert")
        multi = spec.model.multi_label
        index_names = read_label_names(d.labels_file) if d.labels_file else None
        read = {split: read_rows(path, f"data.{split}_file", d, multi) for split, path in files.items()}
        if d.labels or index_names:
            classes, origin = list(d.labels or index_names), "data.labels" if d.labels else "data.labels_file"
        else:
            probe = LabelResolver([], "", None)
            classes = sorted_labels(probe.name(t) for r in read.values() for row in r.rows for t in row.labels)
            origin = "the files"
        resolver = LabelResolver(classes, origin, index_names)
        report: dict[str, Any] = {"output_dir": str(out), "output_format": c.output_format, "labels": classes}
        for split, result in read.items():
            good, bad = resolve_rows(result.rows, resolver, multi)
            bad = {**result.bad, **bad}
            lines, flattened = [], 0
            for _, text, target in good:
                indices = [i for i, v in enumerate(target) if v] if multi else [target]
                if c.output_format == "jsonl":
                    names = [classes[i] for i in indices]
                    record = {"text": text, "labels": names} if multi else {"text": text, "label": names[0]}
                    lines.append(json.dumps(record, ensure_ascii=False))
                    continue
                flat = " ".join(text.split())  # a tab or line break inside a sentence cannot be in a TSV field
                flattened += flat != text
                labels = [str(i) for i in indices] if c.output_format == "tao" else [classes[i] for i in indices]
                lines.append(f"{flat}\t{d.label_separator.join(labels)}")
            source = Path(files[split])
            suffix = ".jsonl" if c.output_format == "jsonl" else ".tsv"
            target_path = out / f"{source.stem}{suffix}"
            header = ["sentence\tlabel"] if c.output_format == "tao" else []
            atomic_write_text(target_path, "".join(line + "\n" for line in header + lines))
            report[split] = {"source": str(source), "file": str(target_path), "sentences": len(lines),
                             "whitespace_flattened": flattened, "blank_lines": result.blank,
                             "skipped": skipped_report(bad)}
            if bad:
                log.warning("data.%s_file: skipped %d row(s), e.g. %s: %s", split, len(bad), *next(iter(bad.items())))
            log.info("%s: %d sentences -> %s", source, len(lines), target_path)
        if c.output_format == "tao":
            report["labels_file"] = str(atomic_write_text(out / "labels.txt", "".join(n + "\n" for n in classes)))
        if results is not None:
            atomic_write_json(results / "dataset_convert.json", report)
        return report


TASK = TextClassificationTask()
