"""The keypoints task: top-down heatmap models on COCO keypoints; OKS AP, PCK, per-keypoint errors; inference
on full images with given boxes or after a transferkit detector."""
from __future__ import annotations

import io
import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...data.items import collate_skipping, skipped_report, usable_batches
from ...data.module import build_loader
from ...engine.meta import ModelMeta, image_input
from ...errors import DataError, ModelError, SpecError
from ...io import atomic_write_bytes, atomic_write_json
from ...optimize.prune import apply_layer_shapes
from ...spec import require_path
from ...vision.images import check_unique_stems, collect_images, load_image
from ...vision.task import VisionTask
from ...zoo import get_image_entry
from ..base import ExportGraph, Predictor
from .data import KeypointData, KpItem
from .formats import read_coco_keypoints, write_coco_results
from .model import DecodedKeypoints, build_pose_net
from .module import KeypointModule, coco_result, crop_keypoints, to_image
from .spec import INPUT_STRIDE, KeypointsSpec

log = logging.getLogger("transferkit")

KEYPOINT_PARITY_PX = 0.5  # export.output=keypoints: eager and ONNX points must agree within this many crop pixels
# Kept in float in INT8 exports: ONNX Runtime has no INT8 kernel for the head's transposed convolutions on x86 (it
# dequantised their weights every call and ran the float kernel), so quantising them made the whole model slower
# than FP32 (MobileNetV2 + 3 deconvolutions at 128x96, kernel ms per crop, 1 thread: FP32 5.00, INT8 with them
# 5.99, INT8 without them 4.09; docs/int8_export.md).
INT8_FLOAT_OPS = ("ConvTranspose",)
KEYPOINT_AGREEMENT = 0.99  # ... for at least this share of keypoints (argmax ties may pick a neighbour pixel)


class KeypointsTask(VisionTask):
    name = "keypoints"
    spec_class = KeypointsSpec
    monitor = "val/AP"
    monitor_mode = "max"
    output_names = ("heatmaps",)
    headline = "AP"
    description = "keypoint estimation, top-down heatmaps on any backbone (COCO keypoints JSON), OKS AP"

    # -- data and model ------------------------------------------------------------------------
    def normalisation(self, spec: KeypointsSpec) -> tuple[tuple, tuple]:
        entry = get_image_entry(spec.model.backbone)
        return tuple(entry.mean), tuple(entry.std)

    def build_data(self, spec: KeypointsSpec, meta: ModelMeta | None = None) -> KeypointData:
        if meta is None:
            mean, std = self.normalisation(spec)
            data = KeypointData(spec, mean, std)
            data.heatmap_stride = INPUT_STRIDE // 2 ** len(spec.model.deconv_channels)
            return data
        data = KeypointData(spec, meta.image.mean, meta.image.std, meta)
        data.heatmap_stride = int(meta.arch.get("heatmap_stride", 4))
        return data

    def build_training_module(self, spec: KeypointsSpec, data: KeypointData):
        d, m = spec.data, spec.model
        if isinstance(m.pretrained, str):
            require_path("model.pretrained", m.pretrained, "file")
        meta = ModelMeta(task=self.name, classes=tuple(data.names), backbone=m.backbone,
                         inputs=(image_input(d.image_height, d.image_width, data.mean, data.std),),
                         arch={"names": list(data.names), "skeleton": [list(p) for p in data.skeleton],
                               "category_id": data.category_id, "category_name": data.category_name,
                               "flip_pairs": [list(p) for p in data.pairs], "sigmas": data.sigmas.tolist(),
                               "deconv_channels": list(m.deconv_channels), "upsample": m.upsample,
                               "box_padding": d.box_padding})
        report = None
        if m.pruned:
            net, meta = self.load_pruned(m, meta)
            meta = meta.with_updates(arch={**meta.arch, "names": list(data.names),
                                           "flip_pairs": [list(p) for p in data.pairs],
                                           "sigmas": data.sigmas.tolist(), "box_padding": d.box_padding})
        else:
            net, report = build_pose_net(m.backbone, len(data.names), m.deconv_channels, m.pretrained,
                                         m.freeze_blocks, m.freeze_bn, m.upsample)
        meta = meta.with_updates(arch={**meta.arch, "heatmap_stride": net.stride})
        data.heatmap_stride = net.stride
        return KeypointModule(net, meta, spec.train, data, spec.evaluation.decode), report

    def build_net(self, meta: ModelMeta) -> nn.Module:
        # files written before model.upsample existed have transposed convolutions
        net, _ = build_pose_net(meta.backbone, len(meta.classes), meta.arch["deconv_channels"], pretrained=False,
                                upsample=meta.arch.get("upsample", "deconv"))
        if meta.pruned_shapes:
            apply_layer_shapes(net, meta.pruned_shapes)
        return net

    def prune_ignored_layers(self, net: nn.Module) -> list[nn.Module]:
        return [net.final]

    def spec_for_model(self, spec: KeypointsSpec, meta: ModelMeta) -> KeypointsSpec:
        spec = super().spec_for_model(spec, meta)
        padding = meta.arch.get("box_padding")
        if padding is not None and padding != spec.data.box_padding:
            spec = spec.model_copy(update={"data": spec.data.model_copy(update={"box_padding": padding})})
        return spec

    def describe_model(self, meta: ModelMeta) -> dict[str, str]:
        info = super().describe_model(meta)
        info["keypoints"] = info.pop("classes")
        info["heatmaps"] = f"stride {meta.arch.get('heatmap_stride')}, output {meta.export.get('output', 'heatmaps')}"
        return info

    # -- export --------------------------------------------------------------------------------
    def export_graph(self, net: nn.Module, meta: ModelMeta, spec: KeypointsSpec) -> ExportGraph:
        if spec.export.output == "keypoints":
            module = DecodedKeypoints(net, (meta.image.width, meta.image.height), spec.evaluation.decode)
            return ExportGraph(module, ("keypoints", "scores"),
                               meta={"output": "keypoints", "decode": spec.evaluation.decode},
                               int8_op_types=("Conv",), int8_exclude=INT8_FLOAT_OPS)
        return ExportGraph(net, self.output_names, meta={"output": "heatmaps"}, int8_exclude=INT8_FLOAT_OPS)

    def check_export(self, spec, net: nn.Module, graph: ExportGraph, onnx_path: Path,
                     probe: tuple[torch.Tensor, ...]) -> dict:
        """Heatmaps within tolerance; decoded keypoints within KEYPOINT_PARITY_PX for nearly every point and
        their scores within tolerance."""
        from ...optimize import verify_export
        from ...optimize.runtime import OnnxModel

        if spec.export.output != "keypoints":
            return verify_export(graph.module, onnx_path, probe, atol=spec.export.parity_tolerance, rtol=0)
        with torch.inference_mode():
            xy, score = graph.module.eval()(*probe)
        o_xy, o_score = (torch.from_numpy(a) for a in OnnxModel(onnx_path)(*(x.numpy() for x in probe)))
        distance = (xy - o_xy).norm(dim=-1)
        agreement = float((distance <= KEYPOINT_PARITY_PX).float().mean())
        score_diff = float((score - o_score).abs().max())
        result = {"ok": True, "max_abs_diff": score_diff, "max_keypoint_px": float(distance.max()),
                  "keypoint_agreement": agreement, "batch": len(probe[0])}
        if agreement < KEYPOINT_AGREEMENT or score_diff > spec.export.parity_tolerance:
            raise ModelError(f"{onnx_path}: decoded keypoints differ from PyTorch (only {agreement:.2%} within "
                             f"{KEYPOINT_PARITY_PX} px, scores up to {score_diff:.3g} apart); export with "
                             "export.output=heatmaps")
        return result

    # -- evaluate ------------------------------------------------------------------------------
    def predict_items(self, spec, predictor: Predictor, batches, items: list[KpItem], decode: str,
                      flip_test: bool) -> tuple[list[dict], list[KpItem], np.ndarray]:
        """COCO results, the items they belong to, and the points [M, K, 2] in image pixels, from crop batches."""
        meta = predictor.meta
        results, seen, points = [], [], []
        for batch in batches:
            images, inverse, index = batch[0], batch[-2], batch[-1]
            xy, score = crop_keypoints(predictor, images, meta, decode, flip_test)
            xy = to_image(xy, inverse).numpy()
            score = score.numpy()
            for row, i in enumerate(index.tolist()):
                item = items[i]
                seen.append(item)
                points.append(xy[row])
                results.append(coco_result(item.image_id, meta.arch["category_id"], xy[row], score[row], item.score))
        return results, seen, np.asarray(points, np.float64).reshape(-1, len(meta.classes), 2)

    def evaluate(self, spec: KeypointsSpec, predictor: Predictor, data: KeypointData, out_dir: Path) -> dict:
        e = spec.evaluation
        results, seen, points = self.predict_items(spec, predictor, usable_batches(data.val_dataloader(), data.skipped),
                                                   data.val_items, e.decode, e.flip_test)
        if not seen:
            raise DataError("no usable validation objects to evaluate; check data.val_images / data.val_labels")
        write_coco_results(out_dir / "keypoints.json", results)
        metrics = self.score(spec, data, seen, results, points)
        metrics["model"] = predictor.info
        metrics["flip_test"] = e.flip_test
        return metrics

    def score(self, spec: KeypointsSpec, data: KeypointData, seen: list[KpItem], results: list[dict],
              points: np.ndarray) -> dict[str, Any]:
        """OKS AP/AR (COCOeval's definition), PCK@alpha, NME and per-keypoint errors of `points` for `seen`."""
        from ...metrics.keypoints import keypoint_errors, nme, oks_evaluate, pck

        names = data.names
        metrics: dict[str, Any] = {k: _number(v) for k, v in
                                   oks_evaluate(data.ground_truth(seen), results, data.sigmas).items()}
        truth = np.stack([it.keypoints for it in seen]).astype(np.float64)
        longer = np.array([max(it.bbox[2], it.bbox[3]) for it in seen], np.float64)
        overall, per = pck(points, truth, longer, spec.evaluation.pck_alpha)
        metrics["PCK"] = _number(overall)
        metrics["pck_alpha"] = spec.evaluation.pck_alpha
        metrics["PCK_per_keypoint"] = {n: _number(v) for n, v in zip(names, per)}
        diagonal = np.array([np.hypot(it.bbox[2], it.bbox[3]) for it in seen], np.float64)
        metrics["NME"] = _number(nme(points, truth, diagonal)[0])
        metrics["keypoint_error_px"] = {n: _number(v) for n, v in zip(names, keypoint_errors(points, truth))}
        metrics["sigmas"] = {n: float(s) for n, s in zip(names, data.sigmas)}
        metrics["num_objects"] = len(seen)
        metrics["num_images"] = len({it.image_id for it in seen})
        metrics[f"skipped_{self.item_kind}"] = skipped_report(data.skipped)
        metrics["data_problems"] = data.problems
        metrics["warnings"] = list(data.warnings)
        log.info("AP %.4f, AP50 %.4f, AP75 %.4f, AR %.4f, PCK@%g %.4f on %d objects", metrics["AP"] or 0,
                 metrics["AP50"] or 0, metrics["AP75"] or 0, metrics["AR"] or 0, spec.evaluation.pck_alpha,
                 metrics["PCK"] or 0, len(seen))
        return metrics

    def evaluate_without_model(self, spec: KeypointsSpec, out_dir: Path) -> dict | None:
        """`evaluation.predictions=FILE`: score a COCO keypoint results JSON against data.val_labels. PCK and the
        per-keypoint errors match each object with the unused prediction of its image nearest to it."""
        if not spec.evaluation.predictions:
            return None
        path = require_path("evaluation.predictions", spec.evaluation.predictions, "file")
        mean, std = self.normalisation(spec)
        data = KeypointData(spec, mean, std, need_train=False)
        data.scan("val")
        results = read_results(path, len(data.names))
        by_image: dict[int, list[dict]] = defaultdict(list)
        for r in results:
            by_image[int(r["image_id"])].append(r)
        seen, points = [], []
        for image_id, items in _group(data.val_items).items():
            candidates = [np.asarray(r["keypoints"], np.float64).reshape(-1, 3)[:, :2] for r in by_image.get(image_id, [])]
            used: set[int] = set()
            for item in items:
                best, best_d = None, np.inf
                visible = item.keypoints[:, 2] > 0
                for j, c in enumerate(candidates):
                    d = np.linalg.norm(c[visible] - item.keypoints[visible, :2], axis=1).mean()
                    if j not in used and d < best_d:
                        best, best_d = j, d
                if best is None:
                    continue
                used.add(best)
                seen.append(item)
                points.append(candidates[best])
        if not seen:
            raise DataError(f"evaluation.predictions: {path} has no prediction for any image of data.val_labels "
                            "(image_id must be the validation JSON's image ids)")
        usable_ids = {it.image_id for it in data.val_items}
        kept = [r for r in results if int(r["image_id"]) in usable_ids]
        metrics = self.score(spec, data, seen, kept, np.asarray(points))
        metrics["model"] = {"predictions": str(path)}
        metrics["objects_without_prediction"] = len(data.val_items) - len(seen)
        metrics["predictions_for_other_images"] = len(results) - len(kept)  # image ids not among the usable val ones
        if len(results) > len(kept):
            log.warning("evaluation.predictions: %d result(s) name image ids that are not usable validation images; "
                        "left out", len(results) - len(kept))
        return metrics

    # -- inference -----------------------------------------------------------------------------
    def inference(self, spec: KeypointsSpec, predictor: Predictor, out_dir: Path) -> dict:
        """keypoints.json (COCO results, plus file_name and bbox) and annotated/<stem>.png with skeletons drawn."""
        inf, meta = spec.inference, predictor.meta
        paths = collect_images(inf.images)
        if inf.annotate:
            check_unique_stems(paths, "annotated/{stem}.png")
        boxes, image_ids, source = self.find_boxes(spec, paths)
        items = [KpItem(p, image_ids[str(p)], 0, tuple(b), np.zeros((len(meta.classes), 3), np.float32), s)
                 for p in paths for b, s in boxes.get(str(p), [])]
        bad: dict[str, str] = {}
        results: list[dict] = []
        if items:
            crops = _inference_crops(spec, meta, items)
            loader = build_loader(crops, inf.batch_size, train=False, collate_fn=collate_skipping)
            results, seen, _ = self.predict_items(spec, predictor, usable_batches(loader, bad), items, inf.decode,
                                                  inf.flip_test)
            for r, item in zip(results, seen):
                r["bbox"] = [round(float(v), 2) for v in item.bbox]
                r["file_name"] = str(item.image)
        write_coco_results(out_dir / "keypoints.json", results)
        if inf.annotate:
            by_file: dict[str, list[dict]] = defaultdict(list)
            for r in results:
                by_file[r["file_name"]].append(r)
            for p in paths:
                if str(p) in bad:
                    continue
                try:
                    picture = load_image(p, spec.data.max_image_pixels)
                except DataError as e:
                    bad[str(p)] = str(e)
                    continue
                drawn = draw_skeletons(picture, by_file.get(str(p), []), [tuple(s) for s in meta.arch["skeleton"]],
                                       inf.keypoint_threshold)
                buf = io.BytesIO()
                drawn.save(buf, format="PNG")
                atomic_write_bytes(out_dir / "annotated" / f"{p.stem}.png", buf.getvalue())
        return {"images": len(paths) - len(bad), "objects": len(results), "boxes_from": source,
                f"skipped_{self.item_kind}": skipped_report(bad), "keypoints": str(out_dir / "keypoints.json"),
                "model": predictor.info}

    def find_boxes(self, spec: KeypointsSpec, paths: list[Path]
                   ) -> tuple[dict[str, list[tuple[list[float], float]]], dict[str, int], str]:
        """{image path: [(box x, y, w, h, score)]}, {image path: image id} and where the boxes came from."""
        inf = spec.inference
        if inf.boxes and inf.detector:
            raise SpecError("inference.boxes and inference.detector both give boxes; set one of them")
        by_name = {p.name: p for p in paths}
        ids: dict[str, int] = {str(p): (int(p.stem) if p.stem.isdigit() else n) for n, p in enumerate(paths, 1)}
        boxes: dict[str, list] = defaultdict(list)
        if inf.labels:
            kset = read_coco_keypoints(require_path("inference.labels", inf.labels, "file"), None, category=spec.data.category)
            id_to_path = {}
            for im in kset.images:
                p = by_name.get(Path(im.file).name)
                if p is not None:
                    ids[str(p)] = im.id
                    id_to_path[im.id] = p
            if not id_to_path:
                raise DataError(f"inference.labels: no image of {inf.labels} is among inference.images "
                                "(matched by file name)")
            if not inf.boxes and not inf.detector:
                for obj in kset.objects:
                    if not obj.iscrowd and obj.image_id in id_to_path:
                        boxes[str(id_to_path[obj.image_id])].append((list(obj.bbox), 1.0))
                return boxes, ids, f"labels {inf.labels}"
        if inf.boxes:
            path = require_path("inference.boxes", inf.boxes, "file")
            rows, unmatched = read_boxes(path, {i: p for p, i in ids.items()}, by_name)
            if unmatched:
                log.warning("inference.boxes: %d detection(s) of %s name no image of inference.images (by file_name, "
                            "image_id through inference.labels, or a numeric file name); left out", unmatched, path)
            for file, box, score in rows:
                if score >= inf.detector_threshold:
                    boxes[file].append((box, score))
            return boxes, ids, f"boxes {path}" + (f" ({unmatched} detections matched no image)" if unmatched else "")
        if inf.detector:
            return detector_boxes(spec, paths), ids, f"detector {inf.detector}"
        log.info("no inference.labels, inference.boxes or inference.detector: each whole image is one object")
        from ...vision.images import image_size

        for p in paths:
            try:
                w, h = image_size(p)
            except DataError:
                continue  # reported when the crop is loaded
            boxes[str(p)].append(([0.0, 0.0, float(w), float(h)], 1.0))
        return boxes, ids, "whole images"


def _inference_crops(spec: KeypointsSpec, meta: ModelMeta, items: list[KpItem]):
    from .data import KeypointCrops

    image = meta.image
    return KeypointCrops(items, (image.width, image.height), image.mean, image.std,
                         padding=meta.arch.get("box_padding", spec.data.box_padding),
                         max_pixels=spec.data.max_image_pixels, stride=None)


def _group(items: list[KpItem]) -> dict[int, list[KpItem]]:
    grouped: dict[int, list[KpItem]] = defaultdict(list)
    for it in items:
        grouped[it.image_id].append(it)
    return grouped


def _number(value) -> float | None:
    """A metric as a float; None for undefined values (None, NaN, COCOeval's -1 for 'no ground truth')."""
    if value is None:
        return None
    value = float(value)
    return None if not np.isfinite(value) or value < 0 else value


def read_results(path: Path, num_keypoints: int) -> list[dict]:
    """A COCO keypoint results JSON: a list of {image_id, keypoints [x, y, score]*K, score}; DataError otherwise."""
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"evaluation.predictions: {path} is not a JSON file ({str(e).splitlines()[0]})") from None
    if not isinstance(results, list):
        raise DataError(f"evaluation.predictions: {path} must hold a list of COCO keypoint results "
                        "[{image_id, category_id, keypoints, score}]")
    for n, r in enumerate(results):
        ok = (isinstance(r, dict) and isinstance(r.get("image_id"), int) and isinstance(r.get("keypoints"), list)
              and len(r["keypoints"]) == 3 * num_keypoints and isinstance(r.get("score", 0), (int, float))
              and all(isinstance(v, (int, float)) and np.isfinite(v) for v in r["keypoints"]))
        if not ok:
            raise DataError(f"evaluation.predictions: {path} entry {n} is not a keypoint result with an integer "
                            f"image_id, {3 * num_keypoints} finite keypoint values ([x, y, score] x "
                            f"{num_keypoints}) and a score")
        r.setdefault("score", 1.0)
    return results


def read_boxes(path: Path, id_to_file: dict[int, str], by_name: dict[str, Path]
               ) -> tuple[list[tuple[str, list[float], float]], int]:
    """(image file, box x, y, w, h, score) rows of a COCO detections JSON ([{image_id, bbox, score}], ids matched
    through inference.labels or numeric file stems, or a file_name per entry) or a transferkit detections.json,
    and how many detections matched no image."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"inference.boxes: {path} is not a JSON file ({str(e).splitlines()[0]})") from None
    if isinstance(rows, dict):
        rows = rows.get("annotations", [])
    out, unmatched = [], 0
    if not isinstance(rows, list):
        raise DataError(f"inference.boxes: {path} must hold a list of detections")
    for n, row in enumerate(rows):
        if isinstance(row, dict) and "detections" in row and "image" in row:  # transferkit detections.json
            p = by_name.get(Path(str(row["image"])).name)
            unmatched += 0 if p is not None else len(row["detections"])
            for det in row["detections"] if p is not None else []:
                x1, y1, x2, y2 = (float(v) for v in det["box"])
                out.append((str(p), [x1, y1, x2 - x1, y2 - y1], float(det.get("score", 1.0))))
            continue
        try:
            box = [float(v) for v in row["bbox"]]
            if len(box) != 4 or box[2] <= 0 or box[3] <= 0 or not all(np.isfinite(box)):
                raise ValueError
            file = (str(by_name[Path(row["file_name"]).name]) if row.get("file_name") and
                    Path(row["file_name"]).name in by_name else id_to_file.get(int(row["image_id"])))
        except (KeyError, TypeError, ValueError):
            raise DataError(f"inference.boxes: {path} entry {n} is not a detection {{image_id, bbox [x, y, w, h] "
                            "with w, h > 0, score}") from None
        if file is None:
            unmatched += 1
        else:
            out.append((file, box, float(row.get("score", 1.0))))
    return out, unmatched


def detector_boxes(spec: KeypointsSpec, paths: list[Path]) -> dict[str, list[tuple[list[float], float]]]:
    """Run a transferkit detector (inference.detector, .ckpt or .onnx) on `paths` as its own inference does;
    keep boxes of inference.detector_class above inference.detector_threshold, in image pixels (x, y, w, h)."""
    from ... import api
    from ...spec import load_spec
    from ...vision.boxes import ImageBoxes
    from ...vision.datasets import DetectionImages, collate_detection
    from .. import get_task
    from ..detection.base import DetectionTask
    from ..detection.data import original_scale

    inf = spec.inference
    path = require_path("inference.detector", inf.detector, "file")
    det_meta = api.read_model_meta(path)
    det_task = get_task(det_meta.task)
    if not isinstance(det_task, DetectionTask):
        raise ModelError(f"inference.detector: {path} is a {det_meta.task} model, not a detector; give a "
                         "detectnet_v2 or yolo_v4_tiny best.ckpt or .onnx")
    classes = list(det_meta.classes)
    wanted = set(range(len(classes)))
    if inf.detector_class:
        unknown = [c for c in inf.detector_class if c not in classes]
        if unknown:
            raise SpecError(f"inference.detector_class: {unknown} not among the detector's classes {classes}")
        wanted = {classes.index(c) for c in inf.detector_class}
    predictor = api.load_predictor(det_task, path)
    beside = path.parent / "spec.yaml"  # what the detector was trained / exported with (its post-processing)
    det_spec = load_spec(api.spec_schema(det_task), beside if beside.is_file() else None, list(inf.detector_overrides))
    image = det_meta.image
    items = [ImageBoxes(image=p, boxes=np.zeros((0, 4)), labels=np.zeros(0)) for p in paths]
    dataset = DetectionImages(items, image.width, image.height, list(image.mean), list(image.std), None,
                              spec.data.max_image_pixels)
    loader = build_loader(dataset, inf.batch_size, train=False, collate_fn=collate_detection)
    boxes: dict[str, list] = defaultdict(list)
    bad: dict[str, str] = {}
    for images, targets in usable_batches(loader, bad):
        for target, pred in zip(targets, det_task.predict(det_spec, predictor, images, targets)):
            scaled = original_scale(target, pred.boxes)
            for box, label, score in zip(scaled, pred.labels, pred.scores):
                if int(label) in wanted and score >= inf.detector_threshold:
                    x1, y1, x2, y2 = (float(v) for v in box)
                    if x2 > x1 and y2 > y1:
                        boxes[str(target.image)].append(([x1, y1, x2 - x1, y2 - y1], float(score)))
    log.info("detector %s found %d boxes in %d images", path, sum(len(b) for b in boxes.values()), len(paths))
    return boxes


def draw_skeletons(image, results: list[dict], skeleton: list[tuple[int, int]], threshold: float):
    """A copy of `image` with each object's box, limbs (both ends above `threshold`) and keypoints drawn."""
    from PIL import ImageDraw

    from ...vision.draw import class_colour

    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    size = min(out.size)
    line, radius = max(1, round(size / 200)), max(2, round(size / 120))
    for r in results:
        kps = np.asarray(r["keypoints"], np.float64).reshape(-1, 3)
        if "bbox" in r:
            x, y, w, h = r["bbox"]
            draw.rectangle((x, y, x + w - 1, y + h - 1), outline=(255, 255, 255), width=line)
        for n, (a, b) in enumerate(skeleton):
            if max(a, b) < len(kps) and kps[a, 2] >= threshold and kps[b, 2] >= threshold:
                draw.line((kps[a, 0], kps[a, 1], kps[b, 0], kps[b, 1]), fill=class_colour(n), width=line + 1)
        for k, (x, y, s) in enumerate(kps):
            if s >= threshold:
                draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=class_colour(k),
                             outline=(0, 0, 0))
    return out


TASK = KeypointsTask()
