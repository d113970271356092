"""Every bounded number of every task's spec is accepted at its bound and refused just past it (one
SpecError naming the key), and a spec at a bound builds the runtime objects that read it: the spec's
ranges are exactly what the code can do. Also: keys a task cannot use are refused, and every task calls
its evaluation section `evaluation`."""
from __future__ import annotations

import types
from pathlib import Path
from typing import Annotated, Callable, Union, get_args, get_origin

import annotated_types
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from torch import nn

from transferkit.cli import main
from transferkit.engine.meta import ModelMeta, image_input
from transferkit.errors import SpecError
from transferkit.spec import load_spec
from transferkit.tasks import get_task, task_names
from transferkit.vision.boxes import ImageBoxes

BOUND_KINDS = {annotated_types.Ge: "ge", annotated_types.Gt: "gt", annotated_types.Le: "le", annotated_types.Lt: "lt"}
INCLUSIVE = {"ge": True, "le": True, "gt": False, "lt": False}
CLASSES = ["a", "b"]


def _meta(task: str, arch: dict | None = None) -> ModelMeta:
    return ModelMeta(task=task, classes=tuple(CLASSES), backbone=None, inputs=(image_input(64, 64, (0.5,) * 3, (0.5,) * 3),),
                     arch=arch or {})


def _bounds(metadata) -> list[tuple[str, float]]:
    """(ge|gt|le|lt, value) pairs in pydantic field metadata (annotated_types objects or nested FieldInfo)."""
    found = []
    for item in metadata:
        if isinstance(item, FieldInfo):
            found += _bounds(item.metadata)
        for kind, name in BOUND_KINDS.items():
            if isinstance(item, kind):
                found.append((name, getattr(item, name)))
    return found


def _element(annotation) -> tuple[type, list[tuple[str, float]]]:
    """The number type of an annotation (int or float, Optional and Annotated unwrapped) and its bounds."""
    if get_origin(annotation) is Annotated:
        base, *meta = get_args(annotation)
        number, inner = _element(base)
        return number, inner + _bounds(meta)
    if get_origin(annotation) in (Union, types.UnionType):
        numbers = [_element(a) for a in get_args(annotation) if a is not type(None)]
        return numbers[0] if len(numbers) == 1 else (None, [])
    if annotation in (int, float):
        return annotation, []
    return None, []


def bounded_keys(model: type[BaseModel], override: Callable[[str, str], str] | None = None,
                 prefix: str = "", unbounded: bool = False) -> list[tuple[str, type, list[tuple[str, float]],
                                                                        Callable[[str], str]]]:
    """(dotted key, number type, bounds, value text -> override text) for every bounded number in a schema
    (with `unbounded`, every number).

    Numbers inside tuples and lists are set all to the same value; per-class override sections
    (dict[str, section]) are walked with one class, 'a'."""
    override = override or (lambda key, text: f"{key}={text}")
    found = []
    for name, info in model.model_fields.items():
        key, annotation = prefix + name, info.annotation
        origin, args = get_origin(annotation), get_args(annotation)
        section = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        if section is not None:
            found += bounded_keys(section, override, key + ".", unbounded)
            continue
        if origin is dict and isinstance(args[1], type) and issubclass(args[1], BaseModel):
            found += bounded_keys(args[1], lambda inner, text, key=key: f"{key}={{a: {{{inner.rsplit('.', 1)[-1]}: "
                                                                        f"{text}}}}}", key + ".", unbounded)
            continue
        if origin is Union or origin is types.UnionType:  # `list[x] | None`: the list
            lists = [a for a in args if get_origin(a) in (list, tuple)]
            if lists:
                origin, args = get_origin(lists[0]), get_args(lists[0])
        if origin in (list, tuple):
            number, bounds = _element(args[0])
            length = len(args) if origin is tuple else len(CLASSES)
            text = (lambda k, n: lambda v: override(k, "[" + ", ".join([v] * n) + "]"))(key, length)
        else:
            number, bounds = _element(annotation)
            bounds += _bounds(info.metadata)
            text = (lambda k: lambda v: override(k, v))(key)
        if number is not None and (bounds or unbounded):
            found.append((key, number, bounds, text))
    return found


def _cases():
    """(task, key, override, valid) at and just past every bound."""
    cases = []
    for task in task_names():
        for key, number, bounds, text in bounded_keys(get_task(task).spec_class):
            for kind, bound in bounds:
                # a step that still shows in 12 significant digits (1e38 + 1e-3 is 1e38)
                step = 1 if number is int else max(1e-3, abs(bound) * 1e-9)
                inward = step if kind in ("ge", "gt") else -step
                inside = bound if INCLUSIVE[kind] else bound + inward
                outside = bound - inward if INCLUSIVE[kind] else bound
                for value, valid in ((inside, True), (outside, False)):
                    shown = f"{value:.12g}" if number is float else str(int(value))
                    cases.append(pytest.param(task, key, text(shown), valid,
                                              id=f"{task}-{key}-{kind}{bound}-{'in' if valid else 'out'}"))
    return cases


def test_the_walk_finds_the_bounds_it_should():
    keys = {task: {key for key, *_ in bounded_keys(get_task(task).spec_class)} for task in task_names()}
    assert {"train.epochs", "train.label_smoothing", "data.augmentation.random_resized_crop_scale",
            "evaluation.top_k"} <= keys["classification"]
    assert {"data.augmentation.zoom", "targets.cov_radius_x", "targets.per_class.cov_radius_x",
            "postprocess.per_class.dbscan_eps", "loss.class_weights", "loss.giou_weight"} <= keys["detectnet_v2"]
    assert {"data.augmentation.jitter", "data.augmentation.mosaic_min_ratio", "loss.box_weight",
            "nms.top_k", "model.grid_xy_extend"} <= keys["yolo_v4_tiny"]


def test_sizes_widths_workers_devices_seed_and_time_limit_have_upper_bounds():
    """The keys whose largest useful value the machine sets: past it a run would allocate without end,
    fork thousands of processes, or crash inside a library (numpy's seed range, timedelta, a conv layer
    billions of channels wide)."""
    natural = {"train.num_workers", "train.num_devices", "train.seed", "train.max_minutes"}
    sizes = {"classification": {"data.image_size"},
             "segmentation": {"data.image_width", "data.image_height", "model.decoder_channels"},
             "detectnet_v2": {"data.image_width", "data.image_height"},
             "yolo_v4_tiny": {"data.image_width", "data.image_height"}}
    for task in task_names():
        capped = {key for key, _, bounds, _ in bounded_keys(get_task(task).spec_class)
                  if any(kind in ("le", "lt") for kind, _ in bounds)}
        wanted = natural | sizes.get(task, set())
        assert wanted <= capped, (task, wanted - capped)


def _int_keys_without_an_upper_bound():
    return [pytest.param(task, key, text, id=f"{task}-{key}")
            for task in task_names()
            for key, number, bounds, text in bounded_keys(get_task(task).spec_class, unbounded=True)
            if number is int and not any(kind in ("le", "lt") for kind, _ in bounds)]


@pytest.mark.parametrize("task,key,text", _int_keys_without_an_upper_bound())
def test_every_other_integer_key_stops_at_max_spec_int(task, key, text):
    """One limit for every count, size and id the spec does not bound itself: past 2**31 - 1 a number means
    nothing to a run, and past 2**63 it no longer fits the C integers of itertools, numpy and torch."""
    from transferkit.spec import MAX_SPEC_INT

    schema = get_task(task).spec_class
    load_spec(schema, None, [text(str(MAX_SPEC_INT))])
    for value in (MAX_SPEC_INT + 1, 10**20, -(10**20)):
        with pytest.raises(SpecError) as refused:
            load_spec(schema, None, [text(str(value))])
        message = str(refused.value)
        assert "\n" not in message and key.replace(".per_class.", ".per_class.a.") in message
        assert (f"less than or equal to {MAX_SPEC_INT}" if value > 0 else "greater than") in message


# -- runtime objects built from a spec ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bounds") / "scene.png"
    arr = np.full((48, 64, 3), 100, np.uint8)
    arr[8:30, 10:40] = (200, 40, 40)
    Image.fromarray(arr).save(path)
    return path


def _item(picture: Path) -> ImageBoxes:
    return ImageBoxes(image=picture, boxes=np.array([[10, 8, 40, 30]], np.float32), labels=np.array([0]))


def _augmented(spec, picture: Path) -> None:
    """One item through the training transform the task builds from spec.data.augmentation."""
    from transferkit.vision.datasets import DetectionImages

    dataset = DetectionImages([_item(picture)], 64, 64, (0.5,) * 3, (0.25,) * 3, spec.data.augmentation,
                              spec.data.max_image_pixels, seed=0)
    for _ in range(3):
        image, target = dataset[0]
        if image is None:  # data.max_image_pixels below the picture's size: reported as skipped, as it should
            assert target.startswith(f"{picture}\t") and spec.data.max_image_pixels < 64 * 48
            return
        assert image.shape == (3, 64, 64) and torch.isfinite(image).all()


def _target(width: int = 64, height: int = 64) -> ImageBoxes:
    return ImageBoxes(image=Path("x.png"), boxes=np.array([[10, 8, 40, 30]], np.float32), labels=np.array([0]),
                      width=width, height=height)


def _score(spec, targets, preds) -> None:
    from transferkit.metrics import evaluate_detections

    result = evaluate_detections(targets, preds, CLASSES, spec.evaluation.iou_thresholds, spec.evaluation.mode)
    assert 0.0 <= float(result["mAP"] or 0.0) <= 1.0


def build_classification(spec, picture: Path) -> None:
    from transferkit.tasks.classification.data import build_transforms
    from transferkit.tasks.classification.module import ClassificationModule

    size = spec.data.image_size
    for train in (True, False):
        x = build_transforms(spec, (0.5,) * 3, (0.25,) * 3, train)(Image.open(picture).convert("RGB"))
        assert x.shape == (3, size, size) and torch.isfinite(x).all()
    module = ClassificationModule(nn.Identity(), _meta("classification"), spec.train)
    loss = F.cross_entropy(torch.zeros(2, 2), torch.tensor([0, 1]), label_smoothing=module.train_cfg.label_smoothing)
    assert torch.isfinite(loss)


def build_detectnet_v2(spec, picture: Path) -> None:
    from transferkit.tasks.detection.detectnet_v2.module import DetectNetModule

    task = get_task("detectnet_v2")
    task.check_input(spec)
    _augmented(spec, picture)
    module = DetectNetModule(nn.Identity(), _meta(task.name, task.arch(spec)), spec.train, spec)
    torch.manual_seed(0)
    outputs = (torch.randn(1, 2, 4, 4) * 3, torch.randn(1, 8, 4, 4))
    losses = module.compute_losses(outputs, [_target()])
    assert all(torch.isfinite(v) for v in losses.values())
    _score(spec, [_target()], module.predict_outputs(outputs, [_target()]))


def build_yolo_v4_tiny(spec, picture: Path) -> None:
    from transferkit.tasks.detection.yolo_v4_tiny.anchors import kmeans_anchors
    from transferkit.tasks.detection.yolo_v4_tiny.module import YoloModule

    task = get_task("yolo_v4_tiny")
    task.check_input(spec)
    _augmented(spec, picture)
    module = YoloModule(nn.Identity(), _meta(task.name, task.arch(spec)), spec.train, spec)
    torch.manual_seed(0)
    outputs = [torch.randn(1, 3 * 7, 2, 2), torch.randn(1, 3 * 7, 4, 4)]
    losses = module.compute_losses(outputs, [_target()])
    assert all(torch.isfinite(v) for v in losses.values())
    _score(spec, [_target()], module.predict_outputs(outputs, [_target()]))
    k = spec.kmeans
    wh = np.random.default_rng(0).uniform(4, 60, size=(max(12, k.num_clusters), 2))
    kmeans_anchors(wh, k.num_clusters, seed=0, n_init=min(k.restarts, 2), max_iter=min(k.max_iter, 20))


def build_segmentation(spec, picture: Path) -> None:
    from transferkit.tasks.segmentation.data import SegmentationTransform
    from transferkit.tasks.segmentation.loss import resolve_class_weights, segmentation_loss
    from transferkit.tasks.segmentation.model import check_input_size
    from transferkit.vision.masks import ClassTable

    d = spec.data
    classes = ["background", "thing"]
    if d.ignore_index < len(classes):  # valid for the schema, but it would collide with a class index
        with pytest.raises(SpecError, match="ignore") as refused:
            ClassTable.build(classes, d.ignore_index)
        assert "\n" not in str(refused.value)
        return
    ClassTable.build(classes, d.ignore_index)
    check_input_size(d.image_width, d.image_height)
    image = Image.open(picture).convert("RGB")
    mask = np.zeros((image.height, image.width), np.int64)
    mask[8:30, 10:40] = 1
    torch.manual_seed(0)
    x, m = SegmentationTransform(d.image_width, d.image_height, (0.5,) * 3, (0.25,) * 3, d.ignore_index,
                                 d.augmentation)(image, mask)
    assert x.shape == (3, d.image_height, d.image_width) and m.shape == (d.image_height, d.image_width)
    assert set(torch.unique(m).tolist()) <= {0, 1, d.ignore_index}
    weights = resolve_class_weights(spec.loss.class_weights, len(classes), np.array([900, 100]))
    logits, masks = torch.randn(2, 2, 8, 8), torch.randint(0, 2, (2, 8, 8))
    losses = segmentation_loss(logits, masks, spec.loss, weights, d.ignore_index)
    assert all(torch.isfinite(v) for v in losses.values())


def build_text_classification(spec, picture: Path) -> None:
    from transferkit.tasks.text_classification import thresholds_for
    from transferkit.tasks.text_classification.data import TextClassificationData
    from transferkit.tasks.text_classification.module import TextClassificationModule
    from transferkit.data.buckets import LengthBuckets
    from transferkit.text.task import text_inputs
    from transferkit.text.tokenizer import TextTokenizer
    from transferkit.zoo import resolve_model_folder

    train = picture.parent / "sentences.tsv"
    train.write_text("".join(f"sentence number {i} is here\t{CLASSES[i % 2]}\n" for i in range(12)))
    d = spec.data.model_copy(update={"train_file": str(train), "val_file": None})
    tokenizer = TextTokenizer((resolve_model_folder("minilm-l6") / "tokenizer.json").read_text(), spec.model.max_length,
                              spec.model.lowercase)
    data = TextClassificationData(spec.model_copy(update={"data": d}), tokenizer)
    assert data.val_items and all(len(e.ids) <= spec.model.max_length for e in data.train_items + data.val_items)
    buckets = LengthBuckets([len(e.ids) for e in data.train_items], spec.train.batch_size)
    assert set(buckets.order(spec.train.seed)) <= set(range(len(data.train_items)))
    meta = ModelMeta(task="text_classification", classes=tuple(CLASSES), backbone=None,
                     inputs=text_inputs("minilm-l6", spec.model.max_length, False, 30522),
                     arch={"multi_label": spec.model.multi_label})
    thresholds = torch.from_numpy(thresholds_for(spec, CLASSES))
    module = TextClassificationModule(nn.Identity(), meta, spec.train, thresholds)
    assert torch.isfinite(module.loss(torch.zeros(2, 2), torch.tensor([0, 1])))
    assert 0 < min(spec.inference.top_k, len(CLASSES)) and ((thresholds > 0) & (thresholds < 1)).all()


def build_token_classification(spec, picture: Path) -> None:
    from transformers import BertConfig, BertForTokenClassification

    from transferkit.tasks.token_classification.data import encode_sentences
    from transferkit.tasks.token_classification.formats import Sentence
    from transferkit.tasks.token_classification.module import TokenClassificationModule
    from transferkit.text.encoder import TextNet
    from transferkit.text.prune import prune_transformer
    from transferkit.text.tokenizer import TextTokenizer
    from transferkit.zoo import resolve_model_folder

    tags = ["O", "B-a", "I-a"]
    tokenizer = TextTokenizer((resolve_model_folder("minilm-l6") / "tokenizer.json").read_text(),
                              spec.model.max_length, spec.model.lowercase)
    sentence = Sentence(("Ada", "Lovelace", "wrote", "notes") * 4, ("B-a", "I-a", "O", "O") * 4, "x.txt:1")
    (example,), cut = encode_sentences(tokenizer, [sentence], {t: i for i, t in enumerate(tags)})
    assert len(example.ids) <= spec.model.max_length
    assert cut["truncated_words"] == 16 - len({w for w in example.word_ids if w is not None})
    torch.manual_seed(0)
    net = TextNet(BertForTokenClassification(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=8,
                                                        num_hidden_layers=1, num_attention_heads=2,
                                                        intermediate_size=16, num_labels=len(tags))))
    module = TokenClassificationModule(net, _meta("token_classification"), spec.train)
    ids = torch.tensor([example.ids])
    logits = module(ids, torch.ones_like(ids))
    assert torch.isfinite(module.loss(logits, torch.tensor([example.target])))
    prune_transformer(net.eval(), (ids, torch.ones_like(ids)), spec.prune)
    assert module(ids, torch.ones_like(ids)).shape == logits.shape


_SEGMENTERS: list = []


def _segmenter(kind):
    if not _SEGMENTERS:
        _SEGMENTERS.append(kind())
    return _SEGMENTERS[0]


def build_speech_to_text(spec, picture: Path) -> None:
    import json

    import soundfile as sf

    from transferkit.errors import DataError
    from transferkit.audio.ctc import CtcVocabulary, beam_ctc, build_ctc_net, greedy_ctc, output_lengths
    from transferkit.tasks.speech_to_text.data import SpeechData
    from transferkit.tasks.speech_to_text.module import SpeechModule
    from transferkit.tasks.speech_to_text import ctc_meta
    from transferkit.tasks.speech_to_text.data import text_norm

    folder = picture.parent
    wav = folder / "tone.wav"
    if not wav.exists():
        t = np.arange(8000) / 16000
        sf.write(wav, (0.3 * np.sin(2 * np.pi * 440 * t) * (t > 0.1)).astype(np.float32), 16000)
        (folder / "speech.json").write_text("".join(json.dumps({"audio_filepath": "tone.wav", "duration": 0.5,
                                                                "text": f"a tone {i}"}) + "\n" for i in range(3)))
    manifest = str(folder / "speech.json")
    spec = spec.model_copy(update={"data": spec.data.model_copy(update={"train_manifest": manifest,
                                                                        "val_manifest": manifest})})
    if spec.data.max_duration < 0.5:  # the 0.5 s clip is skipped, and a manifest with nothing left is refused
        with pytest.raises(DataError, match="max_duration"):
            SpeechData(spec, "ctc")
        return
    data = SpeechData(spec, "ctc")
    vocab = CtcVocabulary.from_texts(data.train_texts, spec.model.vocabulary)
    data.set_vocabulary(vocab)
    arch = {"encoder": "conv", "conv": spec.model.conv.model_dump(), "dropout": spec.model.dropout, "n_mels": 80}
    net = build_ctc_net({**arch, "vocabulary": vocab.tokens})
    module = SpeechModule(net, ctc_meta("conv", arch, vocab, text_norm(spec)), spec.train, kind="ctc",
                          vocabulary=vocab, text=None, norm=text_norm(spec), val_texts=data.train_texts,
                          pretrained_encoder=False)
    dataset = data.make_dataset(data.train_items, True)
    batch = [dataset[i] for i in range(min(len(dataset), spec.train.batch_size))]
    features, frames, targets, lengths, _, _ = data.collate_for(data.train_items, True)(batch)
    assert torch.isfinite(module.loss(features, frames, targets, lengths))
    logits = torch.randn(len(features), int(output_lengths(frames).max()), len(vocab))
    steps = output_lengths(frames)
    assert len(greedy_ctc(logits, steps)) == len(beam_ctc(logits, steps, spec.evaluation.beam_size))
    inf = spec.inference
    from transferkit.audio.vad import SpeechSegmenter

    wave = sf.read(wav, dtype="float32")[0]
    _segmenter(SpeechSegmenter).segments(wave, 16000, threshold=inf.vad_threshold, min_silence=inf.min_silence,
                               max_segment=inf.max_segment)


def build_keypoints(spec, picture: Path) -> None:
    import json

    from transferkit.metrics.keypoints import oks_evaluate
    from transferkit.tasks.keypoints.codec import decode_heatmaps
    from transferkit.tasks.keypoints.data import resolve_sigmas
    from transferkit.tasks.keypoints.module import heatmap_loss

    sigmas = spec.data.keypoint_sigmas
    count = len(sigmas) if isinstance(sigmas, list) else 5
    names = [f"point_{i}" for i in range(count)]
    labels = picture.parent / f"keypoints_{count}.json"
    # One figure inside the picture's red box (10..40 x 8..30 of a 64 x 48 image), every point visible.
    xy = np.stack([np.linspace(12, 38, count), np.linspace(10, 28, count)], axis=1)
    keypoints = [round(float(v), 2) for x, y in xy for v in (x, y, 2)]
    labels.write_text(json.dumps({
        "images": [{"id": 1, "file_name": picture.name, "width": 64, "height": 48}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 8, 30, 22], "area": 660,
                         "iscrowd": 0, "num_keypoints": count, "keypoints": keypoints}],
        "categories": [{"id": 1, "name": "thing", "keypoints": names, "skeleton": [[1, 2]]}]}))
    spec = spec.model_copy(update={"data": spec.data.model_copy(update={
        "train_images": str(picture.parent), "train_labels": str(labels),
        "val_images": str(picture.parent), "val_labels": str(labels)})})
    data = get_task("keypoints").build_data(spec)
    data.scan("train")
    if spec.data.max_image_pixels < 64 * 48:  # the picture is over the limit: skipped and named, as it must be
        assert not data.train_items and str(picture) in data.skipped
        return
    for train in (True, False):
        image, heatmaps, weights, _, _ = data.make_dataset(data.train_items, train)[0]
        assert image.shape == (3, spec.data.image_height, spec.data.image_width) and torch.isfinite(image).all()
        assert torch.isfinite(heatmap_loss(torch.zeros_like(heatmaps)[None], heatmaps[None], weights[None]))
    xy_crop, score = decode_heatmaps(heatmaps[None], (spec.data.image_width, spec.data.image_height),
                                     method=spec.evaluation.decode)
    assert torch.isfinite(xy_crop).all() and torch.isfinite(score).all()
    result = [{"image_id": 1, "category_id": 1, "score": 1.0, "keypoints": keypoints}]
    gt = json.loads(labels.read_text())
    assert oks_evaluate(gt, result, resolve_sigmas(sigmas, names))["AP"] == pytest.approx(1.0)


BUILDERS = {"classification": build_classification, "detectnet_v2": build_detectnet_v2,
            "yolo_v4_tiny": build_yolo_v4_tiny, "segmentation": build_segmentation,
            "text_classification": build_text_classification,
            "token_classification": build_token_classification, "speech_to_text": build_speech_to_text,
            "keypoints": build_keypoints}


def test_every_task_has_a_runtime_builder():
    assert set(BUILDERS) == set(task_names())


@pytest.mark.parametrize("task", task_names())
def test_the_default_spec_builds_the_runtime_objects(task, picture):
    BUILDERS[task](get_task(task).spec_class(), picture)


@pytest.mark.parametrize("task,key,override,valid", _cases())
def test_bound_is_accepted_and_just_past_it_refused(task, key, override, valid, picture):
    schema = get_task(task).spec_class
    if not valid:
        with pytest.raises(SpecError) as refused:
            load_spec(schema, None, [override])
        message = str(refused.value)
        assert "\n" not in message and key.replace(".per_class.", ".per_class.a.") in message
        return
    BUILDERS[task](load_spec(schema, None, [override]), picture)


# -- ranges that need two values, and keys that do not belong to a task --------------------------------------

@pytest.mark.parametrize("task,override,key", [
    ("detectnet_v2", "data.augmentation.zoom=[1.5, 1.0]", "data.augmentation.zoom"),
    ("classification", "data.augmentation.random_resized_crop_scale=[0.9, 0.5]",
     "data.augmentation.random_resized_crop_scale"),
    ("yolo_v4_tiny", "evaluation.iou_thresholds={a: 1.5}", "evaluation.iou_thresholds"),
    ("detectnet_v2", "targets.per_class={a: {cov_radus_x: 1}}", "targets.per_class.a.cov_radus_x"),
])
def test_inconsistent_values_are_one_line_naming_the_key(task, override, key):
    with pytest.raises(SpecError, match=key.replace(".", r"\.")) as refused:
        load_spec(get_task(task).spec_class, None, [override])
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("task", ["detectnet_v2", "yolo_v4_tiny"])
def test_cli_refuses_augmentation_past_what_the_augmenter_can_do(task, tmp_path, capsys):
    key = "data.augmentation.jitter" if task == "yolo_v4_tiny" else "data.augmentation.translate"
    code = main([task, "train", "-r", str(tmp_path / "run"), f"{key}=0.7"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert key in err and "0.7" in err and "less than" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("task,hint", [("detectnet_v2", None), ("yolo_v4_tiny", "loss.label_smoothing")])
def test_detectors_refuse_train_label_smoothing(task, hint, tmp_path, capsys):
    code = main([task, "train", "-r", str(tmp_path / "run"), "train.label_smoothing=0.1"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "unknown key 'train.label_smoothing'" in err
    if hint:
        assert f"did you mean '{hint}'" in err


def test_classification_reads_train_label_smoothing():
    from transferkit.tasks.classification.module import ClassificationModule

    spec = load_spec(get_task("classification").spec_class, None, ["train.label_smoothing=0.3"])
    assert ClassificationModule(nn.Identity(), _meta("classification"), spec.train).train_cfg.label_smoothing == 0.3


@pytest.mark.parametrize("task", task_names())
def test_every_task_calls_its_evaluation_section_evaluation(task):
    fields = get_task(task).spec_class.model_fields
    assert "evaluation" in fields and "evaluate" not in fields
    with pytest.raises(SpecError, match="did you mean 'evaluation"):
        load_spec(get_task(task).spec_class, None, ["evaluate.batch_size=4"])
