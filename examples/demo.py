"""`make demo`: the whole transferkit path on built-in data, on a laptop CPU.

build data -> fine-tune ImageNet MobileNetV2 (and, for comparison, the same network from random
weights) -> evaluate -> inference -> prune -> retrain -> export ONNX FP32 + INT8 -> evaluate ONNX;
then detection on a KITTI-format set: DetectNet_v2, and YOLOv4-tiny (k-means anchors, train, export
with NMS in the graph, evaluate the ONNX file); semantic segmentation; and the two NLP tasks on the offline
MiniLM encoder: support tickets (text_classification) and named entities (token_classification), each
exported to ONNX and run from the .onnx file alone.
Every step is the same call the CLI makes (`tkit classification <verb> ...`).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from transferkit import api  # noqa: E402
from transferkit.cli import setup_console_logging  # noqa: E402
from transferkit.data.demo import build_demo  # noqa: E402

ROOT = Path(os.environ.get("DEMO_DIR", "demo_runs"))
SPEC = Path(__file__).with_name("classification.yaml")
DET_SPEC = Path(__file__).with_name("detectnet_v2.yaml")
YOLO_SPEC = Path(__file__).with_name("yolo_v4_tiny.yaml")
SEG_SPEC = Path(__file__).with_name("segmentation.yaml")
TASK = "classification"
console = Console()


def step(title: str) -> None:
    console.rule(f"[bold]{title}")


def curve(run: Path, key: str = "val/acc") -> list[float]:
    lines = (run / "status.json").read_text().splitlines()
    return [json.loads(line).get(key) for line in lines]


def main() -> int:
    setup_console_logging(debug=False)
    started = time.time()
    data = ROOT / "data"
    common = [f"data.train_dir={data / 'train'}", f"data.val_dir={data / 'val'}"]

    step("1/14 build the demo dataset (scikit-learn digits on scikit-image textures)")
    summary = build_demo("digits", data, seed=0)
    counts = summary["counts"]
    console.print(", ".join(f"{split}: {sum(per_class.values())} images in {len(per_class)} classes"
                            for split, per_class in counts.items()))

    step("2/14 fine-tune ImageNet MobileNetV2, and the same network from random weights")
    api.train(TASK, SPEC, ROOT / "cls", common, overwrite=True)
    api.train(TASK, SPEC, ROOT / "cls_random", common + ["model.pretrained=false"], overwrite=True)
    pre, rnd = curve(ROOT / "cls"), curve(ROOT / "cls_random")
    table = Table(title="val accuracy per epoch: ImageNet weights vs random weights (same budget)")
    table.add_column("epoch")
    table.add_column("ImageNet mobilenet_v2", justify="right")
    table.add_column("random init", justify="right")
    for i, (a, b) in enumerate(zip(pre, rnd), start=1):
        table.add_row(str(i), f"{a:.3f}", f"{b:.3f}")
    console.print(table)

    best = ROOT / "cls" / "best.ckpt"
    step("3/14 evaluate")
    metrics = api.evaluate(TASK, SPEC, ROOT / "eval", common, model=best)

    step("4/14 inference on the validation images")
    api.inference(TASK, SPEC, ROOT / "infer", common + [f"inference.images={data / 'val'}", "inference.annotate=true"],
                  model=best)

    step("5/14 prune half the channels of every layer group, then retrain the pruned model distilling from the original")
    # prune.ratio=0.5: 3.8x fewer parameters, 3.1x fewer MACs (kept channels in multiples of 8), 1.7x (eager) to
    # 3.5x (ONNX Runtime) faster at batch 1; the spec's threshold 0.5 removed 10 % and was no faster. Pruned this
    # far the network starts at chance (0.100 val top-1; re-estimating its BatchNorm statistics, prune's default,
    # gives 0.127 -- 0.713 at prune.ratio=0.2 -- and changes no retraining: training uses batch statistics).
    # Measured on this set (2026-12-01, on the machine used until then, where the original scored 0.927; 30
    # retraining epochs, best val top-1): plain retraining 0.893 (seed 42) / 0.847 (seed 1); distilling from the
    # unpruned model (distill.teacher=auto, weight 0.5, temperature 2) 0.953 / 0.953 -- better than the original.
    # Temperature 4 gave 0.893, 1 gave 0.920. A distillation epoch costs 1.34x a plain one (the teacher's forward
    # pass; +~20 s here); 20 or 22 epochs, the plain run's time, were erratic (0.900, 0.720: the start at chance
    # lasts a varying while).
    # On the machine after it (fresh-clone make demo, 2026-12-01 20:40): original 0.813, distilled retrain 0.920.
    report = api.prune(TASK, SPEC, ROOT / "prune", common + ["prune.ratio=0.5", "prune.evaluate=true"], model=best)
    api.train(TASK, SPEC, ROOT / "retrain", common + [f"model.pruned={ROOT / 'prune' / 'pruned.ckpt'}", "train.epochs=30",
                                                      "distill.teacher=auto"], overwrite=True)

    step("6/14 export the retrained model to ONNX FP32 and INT8")
    exported = api.export(TASK, SPEC, ROOT / "export", common + ["export.int8=true"], model=ROOT / "retrain" / "best.ckpt")

    step("7/14 evaluate the exported ONNX model with ONNX Runtime")
    onnx_metrics = api.evaluate(TASK, SPEC, ROOT / "eval_onnx", common, model=ROOT / "export" / "model.onnx")

    retrain_metrics = json.loads((ROOT / "retrain" / "metrics.json").read_text())
    table = Table(title="original vs pruned+retrained vs ONNX (CPU latency at batch 1)")
    for col in ("model", "parameters", "size on disk", "latency ms", "val top-1"):
        table.add_column(col, justify="right")
    table.add_row("original (PyTorch)", f"{report['params_before']:,}", f"{report['file_bytes_before'] / 1e6:.1f} MB",
                  f"{report['latency_ms_before']:.2f}", f"{metrics['top1']:.3f}")
    rt = exported["runtimes"]
    table.add_row("pruned, not retrained", f"{report['params_after']:,}", f"{report['file_bytes_after'] / 1e6:.1f} MB",
                  f"{report['latency_ms_after']:.2f}", f"{report['val_after_recalibration']['top1']:.3f}")
    table.add_row("pruned + distilled", f"{report['params_after']:,}", f"{rt['pytorch']['file_bytes'] / 1e6:.1f} MB",
                  f"{rt['pytorch']['latency_ms_batch1']:.2f}", f"{retrain_metrics['best']['val/acc']:.3f}")
    table.add_row("ONNX FP32", f"{report['params_after']:,}", f"{rt['onnx_fp32']['file_bytes'] / 1e6:.1f} MB",
                  f"{rt['onnx_fp32']['latency_ms_batch1']:.2f}", f"{onnx_metrics['top1']:.3f}")
    table.add_row("ONNX INT8", f"{report['params_after']:,}", f"{rt['onnx_int8']['file_bytes'] / 1e6:.1f} MB",
                  f"{rt['onnx_int8']['latency_ms_batch1']:.2f}", f"{rt['onnx_int8']['top1']:.3f}")
    console.print(table)
    step("8/14 object detection: DetectNet_v2 on a KITTI-format digits set")
    kitti = ROOT / "kitti_digits"
    build_demo("kitti_digits", kitti, seed=0)
    det = [f"data.{split}_{kind}={kitti / split / kind}" for split in ("train", "val") for kind in ("images", "labels")]
    api.train("detectnet_v2", DET_SPEC, ROOT / "detectnet_v2", det, overwrite=True)
    det_metrics = api.evaluate("detectnet_v2", DET_SPEC, ROOT / "detectnet_v2_eval", det,
                               model=ROOT / "detectnet_v2" / "best.ckpt")
    console.print(f"DetectNet_v2 val mAP@0.5 = {det_metrics['mAP']:.3f} "
                  f"(per class: {', '.join(f'{k}={v:.2f}' for k, v in det_metrics['AP_per_class'].items() if v is not None)})")
    step("9/14 object detection: YOLOv4-tiny -- anchors by k-means, train, export with NMS inside the ONNX graph")
    anchors = api.run_extra_verb("yolo_v4_tiny", "kmeans", YOLO_SPEC, ROOT / "yolo_anchors", det)
    fitted = [f"model.mid_anchor_shape={anchors['mid_anchor_shape']}", f"model.big_anchor_shape={anchors['big_anchor_shape']}"]
    api.train("yolo_v4_tiny", YOLO_SPEC, ROOT / "yolo_v4_tiny", det + fitted, overwrite=True)
    yolo_export = api.export("yolo_v4_tiny", YOLO_SPEC, ROOT / "yolo_export", det + fitted,
                             model=ROOT / "yolo_v4_tiny" / "best.ckpt")
    yolo_metrics = api.evaluate("yolo_v4_tiny", YOLO_SPEC, ROOT / "yolo_eval_onnx", det + fitted,
                                model=ROOT / "yolo_export" / "model.onnx")
    console.print(f"YOLOv4-tiny val mAP@0.5 = {yolo_metrics['mAP']:.3f} from {yolo_export['onnx']} (ONNX Runtime, NMS in "
                  f"the graph; its decoded boxes and scores match PyTorch's and its NMS kept "
                  f"{yolo_export['parity']['detections']} detections exactly as greedy NMS would on "
                  f"{yolo_export['parity']['batch']} images)")
    step("10/14 semantic segmentation: UNet on ImageNet MobileNetV2, shapes on textures, exported to ONNX")
    shapes = ROOT / "shapes_seg"
    build_demo("shapes_seg", shapes, seed=0)
    seg = [f"data.{split}_{kind}={shapes / split / kind}" for split in ("train", "val") for kind in ("images", "masks")]
    api.train("segmentation", SEG_SPEC, ROOT / "segmentation", seg, overwrite=True)
    seg_export = api.export("segmentation", SEG_SPEC, ROOT / "segmentation_export", seg,
                            model=ROOT / "segmentation" / "best.ckpt")
    seg_metrics = api.evaluate("segmentation", SEG_SPEC, ROOT / "segmentation_eval_onnx", seg,
                               model=ROOT / "segmentation_export" / "model.onnx")
    api.inference("segmentation", SEG_SPEC, ROOT / "segmentation_masks", seg + [f"inference.images={shapes / 'val/images'}"],
                  model=ROOT / "segmentation_export" / "model.onnx")
    console.print(f"segmentation val mIoU = {seg_metrics['mIoU']:.3f} from {seg_export['onnx']} (per class: "
                  f"{', '.join(f'{k}={v:.2f}' for k, v in seg_metrics['IoU_per_class'].items() if v is not None)}); "
                  f"{seg_export['parity']['argmax_agreement']:.2%} of pixels get PyTorch's class; masks and "
                  f"overlays in {ROOT / 'segmentation_masks'}")
    step("11/14 text classification: fine-tune MiniLM on support tickets, export ONNX FP32 + INT8, classify from the .onnx")
    tickets = ROOT / "sentences"
    build_demo("sentences", tickets, seed=0)
    tc = [f"data.train_file={tickets / 'train.tsv'}", f"data.val_file={tickets / 'val.tsv'}", "train.epochs=4"]
    api.train("text_classification", None, ROOT / "text_classification", tc, overwrite=True)
    tc_export = api.export("text_classification", None, ROOT / "text_classification_export", tc + ["export.int8=true"],
                           model=ROOT / "text_classification" / "best.ckpt")
    api.inference("text_classification", None, ROOT / "text_classification_predictions",
                  tc + [f"inference.file={tickets / 'test_lines.txt'}"],
                  model=ROOT / "text_classification_export" / "model_int8.onnx")
    table = Table(title="support tickets: held-out wordings, 100 validation sentences")
    for col in ("runtime", "accuracy", "latency ms (batch 1)", "size on disk"):
        table.add_column(col, justify="right")
    for name, row in tc_export["runtimes"].items():
        table.add_row(name, f"{row['accuracy']:.3f}", f"{row['latency_ms_batch1']:.2f}", f"{row['file_bytes'] / 1e6:.1f} MB")
    console.print(table)
    first = json.loads((ROOT / "text_classification_predictions" / "predictions.jsonl").read_text().splitlines()[0])
    console.print(f"e.g. {first['text']!r} -> {first['label']} ({first['score']:.2f})")

    step("12/14 named entities: token classification on MiniLM; entity names in validation never occur in training")
    entities = ROOT / "entities"
    build_demo("entities", entities, seed=0)
    ner = [f"data.train_file={entities / 'train.txt'}", f"data.val_file={entities / 'val.txt'}"]
    api.train("token_classification", None, ROOT / "token_classification", ner, overwrite=True)
    api.export("token_classification", None, ROOT / "token_classification_export", ner,
               model=ROOT / "token_classification" / "best.ckpt")
    ner_metrics = api.evaluate("token_classification", None, ROOT / "token_classification_eval_onnx", ner,
                               model=ROOT / "token_classification_export" / "model.onnx")
    api.inference("token_classification", None, ROOT / "token_classification_predictions",
                  ner + [f"inference.file={entities / 'test_lines.txt'}"],
                  model=ROOT / "token_classification_export" / "model.onnx")
    per_type = ", ".join(f"{name}={row['f1']:.2f}" for name, row in ner_metrics["per_type"].items())
    console.print(f"entity F1 = {ner_metrics['f1']:.3f} (precision {ner_metrics['precision']:.3f}, recall "
                  f"{ner_metrics['recall']:.3f}; per type: {per_type}) from the .onnx file")
    first = json.loads((ROOT / "token_classification_predictions" / "predictions.jsonl").read_text().splitlines()[0])
    console.print(f"e.g. {first['text']!r} -> " + ", ".join(f"{e['type']} {e['text']!r} [{e['start']}:{e['end']}]"
                                                            for e in first["entities"]))
    step("13/14 keypoints: top-down heatmaps on ImageNet MobileNetV2, drawn stick figures, OKS AP, ONNX with decoding")
    figures = ROOT / "figures"
    build_demo("figures", figures, seed=0, train=100, val=20)
    kp = [f"data.{split}_images={figures / split}" for split in ("train", "val")]
    kp += [f"data.{split}_labels={figures / f'{split}.json'}" for split in ("train", "val")]
    # 96x128 crops (heatmaps 24x32): 64x96 crops trained twice as fast but reached about half the AP
    kp += ["data.image_width=96", "data.image_height=128", "model.deconv_channels=[64,64,64]", "train.epochs=24",
           "train.batch_size=16", "train.learning_rate=0.003", "train.histograms=false"]
    api.train("keypoints", None, ROOT / "keypoints", kp, overwrite=True)
    kp_export = api.export("keypoints", None, ROOT / "keypoints_export", kp + ["export.output=keypoints"],
                           model=ROOT / "keypoints" / "best.ckpt")
    kp_metrics = api.evaluate("keypoints", None, ROOT / "keypoints_eval_onnx", kp,
                              model=ROOT / "keypoints_export" / "model.onnx")
    api.inference("keypoints", None, ROOT / "keypoints_inference",
                  kp + [f"inference.images={figures / 'val'}", f"inference.labels={figures / 'val.json'}"],
                  model=ROOT / "keypoints_export" / "model.onnx")
    worst = max(kp_metrics["keypoint_error_px"].items(), key=lambda kv: kv[1] or 0)
    console.print(f"keypoints val OKS AP = {kp_metrics['AP']:.3f} (AP50 {kp_metrics['AP50']:.3f}, PCK@0.05 "
                  f"{kp_metrics['PCK']:.3f}; hardest joint {worst[0]}, {worst[1]:.1f} px) from {kp_export['onnx']} "
                  f"(decoding in the graph); skeletons drawn in {ROOT / 'keypoints_inference' / 'annotated'}")
    step("14/14 speech to text: Whisper tiny.en zero-shot on new voices, fine-tuned briefly on espeak-ng speech")
    speech = ROOT / "speech"
    build_demo("speech", speech, seed=0, train=24, val=8, long=2)
    asr = [f"data.train_manifest={speech / 'train.json'}", f"data.val_manifest={speech / 'val.json'}"]
    zero_shot = api.evaluate("speech_to_text", None, ROOT / "speech_zero_shot", asr, model="whisper_tiny_en",
                             overwrite=True)
    tuned = api.train("speech_to_text", None, ROOT / "speech_to_text", asr + [
        "model.arch=whisper", "train.learning_rate=1e-4", "train.batch_size=4", "train.epochs=1",
        "train.lr_scheduler=constant", "train.histograms=false"], overwrite=True)
    console.print(f"val WER on voices training never heard: zero-shot {zero_shot['wer']:.3f} -> after one epoch on "
                  f"{tuned['train_utterances']} utterances {tuned['best']['val/wer']:.3f} (CER {zero_shot['cer']:.3f} -> "
                  f"{tuned['final']['val/cer']:.3f}); per-utterance rows in {ROOT / 'speech_zero_shot' / 'utterances.csv'}")
    console.print(f"demo finished in {time.time() - started:.0f} s. Results: {ROOT.resolve()}")
    console.print(f"TensorBoard: tensorboard --logdir {ROOT.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
