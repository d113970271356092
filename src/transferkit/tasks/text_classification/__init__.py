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
from ...text.data import TextCollate, TextExample, no_token, read_inference_inputs, write_jsonl
from ...text.task import TextTask
from ..base import Predictor
from .data import LabelResolver, TextClassificationData, label_names, read_label_names, read_rows, resolve_rows
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


class TextClassificationTask(TextTask):
    name = "text_classification"
    spec_class = TextClassificationSpec
    monitor = "val/f1_macro"
    monitor_mode = "max"
    headline = "accuracy"
    head = "sequence"
    data_class = TextClassificationData
    file_suffix = ".tsv"
    description = "text classification (TSV, CSV or JSON lines; single- or multi-label)"

    # -- model ---------------------------------------------------------------------------------------------
    def build_training_module(self, spec: TextClassificationSpec, data: TextClassificationData):
        net, meta, report = self.training_net(spec, data, multi_label=spec.model.multi_label)
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
        self.require_eval_data(spec)
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
        write_jsonl(out_dir / "val_predictions.jsonl", rows)
        metrics.update({
            "labels": classes, "multi_label": multi, "num_sentences": int(len(true)),
            "counts": {"sentences": int(len(true)), "true": true_counts, "predicted": pred_counts},
            f"skipped_{self.item_kind}": skipped_report(data.skipped),
            "warnings": list(data.warnings), "model": predictor.info,
        })
        atomic_write_json(out_dir / "confusion_matrix.json", {"labels": classes, "rows_true_cols_predicted":
                                                              metrics["confusion"]})
        return metrics

    # -- inference -----------------------------------------------------------------------------------------
    def inference(self, spec: TextClassificationSpec, predictor: Predictor, out_dir: Path) -> dict[str, Any]:
        meta = predictor.meta
        classes = list(meta.classes)
        multi = bool(meta.arch.get("multi_label"))
        thresholds = thresholds_for(spec, classes) if multi else None
        tokenizer = self.tokenizer(meta)
        inputs, passed_over = read_inference_inputs(spec.inference)
        encodings = tokenizer.encode([text for _, text in inputs])
        floor = tokenizer.special_token_count()
        examples = []
        for i, ((where, text), encoding) in enumerate(zip(inputs, encodings)):
            if len(encoding.ids) <= floor:
                passed_over.bad[where] = no_token(text)
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
        rows = []
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
            rows.append(row)
        predictions = write_jsonl(out_dir / "predictions.jsonl", rows)
        return self.inference_summary(predictor, len(examples), passed_over, predictions, multi_label=multi,
                                      **({"thresholds": dict(zip(classes, thresholds.tolist()))} if multi else {}))

    # -- dataset_convert -----------------------------------------------------------------------------------
    def convert(self, spec: TextClassificationSpec, out: Path, files: dict[str, str]) -> dict[str, Any]:
        """The files (any format, integer labels via data.labels_file) -> TSV with label names, JSON lines, or
        TAO's integer TSV + labels.txt; bad rows are reported, not copied."""
        d, c = spec.data, spec.dataset_convert
        multi = spec.model.multi_label
        index_names = read_label_names(d.labels_file) if d.labels_file else None
        read = {split: read_rows(path, f"data.{split}_file", d, multi) for split, path in files.items()}
        classes, origin = label_names(d, index_names, read.values(), "the files")
        resolver = LabelResolver(classes, origin, index_names)
        report: dict[str, Any] = {"output_format": c.output_format, "labels": classes}
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
        return report


TASK = TextClassificationTask()
