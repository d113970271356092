"""speech_to_text: NeMo manifests -> transcripts, by fine-tuning Whisper tiny.en (arch whisper) or an encoder with a
CTC head over the transcripts' characters (arch ctc: Whisper's pretrained encoder, or a small conv encoder from
scratch). Scored by corpus-level WER and CER; long recordings are cut at pauses (Silero VAD) for inference."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...audio.ctc import (BLANK, CtcVocabulary, beam_ctc, build_ctc_net, greedy_ctc, output_lengths,
                          transfer_ctc_weights)
from ...optimize import with_transposed_linears
from ...audio.text import TextNorm, normalize
from ...audio.whisper import (EOT, N_MELS, WhisperNet, WhisperText, beam_decode, build_whisper,
                              find_whisper, greedy_decode, load_whisper, whisper_config, whisper_state)
from ...data.items import skipped_report, usable_batches
from ...engine.checkpoint import LoadReport, read_checkpoint, strip_prefix, transfer_weights
from ...engine.meta import AudioParams, InputSpec, ModelMeta
from ...errors import DataError, ModelError, SpecError
from ...io import atomic_write_json
from ...metrics.speech import utterance_rows, wer_cer, worst_utterances, write_utterance_csv
from ...spec import require_path
from ..base import ExportGraph, Predictor, Task
from .data import SAMPLE_RATE, SpeechData, eval_order, features_of, require_manifest, text_norm
from .module import SpeechModule
from .spec import WHISPER, SpeechToTextSpec

log = logging.getLogger("transferkit")

MEL = {"n_mels": N_MELS, "n_fft": 400, "hop": 160}


# -- metadata ------------------------------------------------------------------------------------------------------

def features_input(fixed_frames: int | None) -> InputSpec:
    """Log-mel features [batch, 80, frames]: 3000 frames (30 s) for the whisper arch, any number for ctc."""
    params = {**MEL, **({"pad_to": 30.0} if fixed_frames else {})}
    return InputSpec(name="features", dtype="float32", shape=("batch", N_MELS, fixed_frames or "frames"),
                     audio=AudioParams(SAMPLE_RATE, "log_mel", params))


def norm_dict(norm: TextNorm) -> dict[str, Any]:
    return {"lowercase": norm.lowercase, "punctuation": norm.punctuation, "numbers": norm.numbers}


def whisper_meta(name: str, config: dict, tokenizer_json: str, suppress, suppress_begin, norm: TextNorm,
                 max_tokens: int) -> ModelMeta:
    tokens = InputSpec(name="tokens", dtype="int64", shape=("batch", "tokens"), value_range=(0, EOT))
    return ModelMeta(task="speech_to_text", classes=(), backbone=name, inputs=(features_input(3000), tokens),
                     arch={"kind": "whisper", "whisper_config": config, "tokenizer_json": tokenizer_json,
                           "suppress": list(suppress), "suppress_begin": list(suppress_begin),
                           "max_tokens": int(max_tokens), "text_norm": norm_dict(norm)})


def ctc_meta(backbone: str, arch: dict, vocabulary: CtcVocabulary, norm: TextNorm) -> ModelMeta:
    return ModelMeta(task="speech_to_text", classes=vocabulary.tokens, backbone=backbone,
                     inputs=(features_input(None),),
                     arch={"kind": "ctc", **arch, "vocabulary": list(vocabulary.tokens), "text_norm": norm_dict(norm)})


def meta_kind(meta: ModelMeta) -> str:
    kind = meta.arch.get("kind")
    if kind not in ("ctc", "whisper"):
        raise ModelError(f"this speech_to_text model's metadata names no arch (ctc or whisper); retrain it")
    return kind


def meta_text(meta: ModelMeta) -> WhisperText:
    a = meta.arch
    return WhisperText(a["tokenizer_json"], a.get("suppress", ()), a.get("suppress_begin", (220, EOT)))


def meta_norm(meta: ModelMeta) -> TextNorm | None:
    n = meta.arch.get("text_norm")
    return TextNorm(**n) if n else None


# -- Whisper's two halves as ONNX files (fast decoding from ONNX Runtime) -------------------------------------------

SPLIT_FILES = {"encoder": "whisper_encoder{}.onnx", "decoder": "whisper_decoder{}.onnx"}


class _EncoderHalf(nn.Module):
    def __init__(self, net: WhisperNet):
        super().__init__()
        self.net = net

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net.encode(features)


class _DecoderHalf(nn.Module):
    def __init__(self, net: WhisperNet):
        super().__init__()
        self.net = net

    def forward(self, tokens: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        return self.net.decode(tokens, states)


def split_paths(model_onnx: Path) -> dict[str, Path]:
    """The encoder and decoder files beside an exported whisper model.onnx (model_int8.onnx: their INT8 copies)."""
    tag = "_int8" if model_onnx.stem.endswith("_int8") else ""
    return {half: model_onnx.with_name(name.format(tag)) for half, name in SPLIT_FILES.items()}


def export_whisper_halves(net: WhisperNet, meta: ModelMeta, out_dir: Path) -> dict[str, str]:
    """whisper_encoder.onnx (features -> states) and whisper_decoder.onnx (tokens, states -> logits), FP32 and
    dynamic INT8, checked against PyTorch: ONNX Runtime then runs the encoder once per utterance, not once per token."""
    from ...optimize import export_onnx, verify_export
    from ...optimize.quantize import quantize_int8_dynamic

    d_model = int(meta.arch["whisper_config"]["d_model"])
    positions = int(meta.arch["whisper_config"]["max_source_positions"])
    states = InputSpec(name="states", dtype="float32", shape=("batch", positions, d_model))
    halves = {"encoder": (_EncoderHalf(net), (features_input(3000),), ("states",), None),
              "decoder": (_DecoderHalf(net), (meta.inputs[1], states), ("logits",), {"logits": {0: "batch", 1: "tokens"}})}
    written: dict[str, str] = {}
    for half, (module, inputs, outputs, axes) in halves.items():
        graph = with_transposed_linears(module)
        path = export_onnx(graph, out_dir / SPLIT_FILES[half].format(""), inputs, {"half": half}, output_names=outputs,
                           output_axes=axes)
        probe = tuple(spec.example(batch=2, sizes={"tokens": 5}, seed=i) for i, spec in enumerate(inputs))
        verify_export(module.eval(), path, probe, atol=1e-3, rtol=0)
        int8 = quantize_int8_dynamic(path, out_dir / SPLIT_FILES[half].format("_int8"))
        written[f"whisper_{half}"], written[f"whisper_{half}_int8"] = str(path), str(int8)
    return written


class _OnnxHalves:
    """encode / decode callables over a whisper export's two ONNX files."""

    def __init__(self, paths: dict[str, Path]):
        from ...optimize.runtime import OnnxModel

        self.encoder, self.decoder = OnnxModel(paths["encoder"]), OnnxModel(paths["decoder"])

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.encoder(features.numpy())[0])

    def decode(self, tokens: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.decoder(tokens.numpy(), states.contiguous().numpy())[0])


# -- decoding on either runtime ------------------------------------------------------------------------------------

class Transcriber:
    """Transcripts of feature batches from a Predictor (eager or ONNX), greedy or beam, normalised by `norm`."""

    def __init__(self, predictor: Predictor, norm: TextNorm, decoding: str = "greedy", beam: int = 4):
        self.predictor, self.norm, self.decoding, self.beam = predictor, norm, decoding, beam
        meta = predictor.meta
        self.kind = meta_kind(meta)
        self.vocabulary = CtcVocabulary(tuple(meta.arch["vocabulary"])) if self.kind == "ctc" else None
        self.text = meta_text(meta) if self.kind == "whisper" else None
        self.max_tokens = int(meta.arch.get("max_tokens", 96))
        self.compute_seconds = 0.0

    def _halves(self):
        net = self.predictor.net
        if net is not None:
            return net.encode, net.start
        paths = split_paths(Path(self.predictor.source))
        if all(p.is_file() for p in paths.values()):
            if not hasattr(self, "_onnx_halves"):
                self._onnx_halves = _OnnxHalves(paths)
            return self._onnx_halves.encode, self._onnx_halves.decode
        # Only the whole graph, (features, tokens) -> logits: its "encoder" passes the features on, and every token
        # runs the encoder again.
        return (lambda features: features), (lambda tokens, features: self.predictor(features, tokens)[0])

    def __call__(self, features: torch.Tensor, frames: torch.Tensor) -> list[str]:
        started = time.perf_counter()
        with torch.inference_mode():
            if self.kind == "ctc":
                logits = self.predictor(features)[0]
                steps = output_lengths(frames).clamp(max=logits.shape[1])
                ids = (beam_ctc(logits, steps, self.beam) if self.decoding == "beam" else greedy_ctc(logits, steps))
                raw = [self.vocabulary.decode(row) for row in ids]
            else:
                encode, decode = self._halves()
                if self.decoding == "beam":
                    ids = beam_decode(encode, decode, features, self.text, self.beam, self.max_tokens)
                else:
                    ids = greedy_decode(encode, decode, features, self.text, self.max_tokens)
                raw = [self.text.decode(row) for row in ids]
        self.compute_seconds += time.perf_counter() - started
        return [normalize(t, self.norm) for t in raw]


# -- the task ------------------------------------------------------------------------------------------------------

class SpeechToTextTask(Task):
    name = "speech_to_text"
    spec_class = SpeechToTextSpec
    monitor = "val/wer"
    monitor_mode = "min"
    headline = "wer"
    item_kind = "utterances"
    output_names = ("logits",)
    fixed_input_shape = False
    description = "speech recognition (NeMo manifests; Whisper tiny.en fine-tuning or CTC)"

    @property
    def extra_verbs(self):
        return {"dataset_convert": self.dataset_convert}

    # -- data --------------------------------------------------------------------------------------------------
    def build_data(self, spec: SpeechToTextSpec, meta: ModelMeta | None = None) -> SpeechData:
        if meta is not None:
            require_manifest(spec, "val")
            kind = meta_kind(meta)
            vocab = CtcVocabulary(tuple(meta.arch["vocabulary"])) if kind == "ctc" else None
            return SpeechData(spec, kind, vocab, meta_text(meta) if kind == "whisper" else None, need_train=False)
        require_manifest(spec, "train")
        require_manifest(spec, "val")
        text = None
        if spec.model.arch == "whisper":
            text = self._whisper_text(spec)
        return SpeechData(spec, spec.model.arch, None, text)

    def _whisper_text(self, spec) -> WhisperText:
        ckpt = self._continue_from(spec)
        if ckpt is not None:
            meta, _ = read_checkpoint(ckpt, task=self.name)
            if meta_kind(meta) != "whisper":
                raise SpecError(f"model.pretrained: {ckpt} is a ctc model; continue it with model.arch=ctc")
            return meta_text(meta)
        folder = find_whisper(spec.model.encoder)
        return WhisperText(folder.tokenizer_json, folder.suppress, folder.suppress_begin)

    def _continue_from(self, spec) -> Path | None:
        p = spec.model.pretrained
        if isinstance(p, str):
            if not p.endswith(".ckpt"):
                raise SpecError(f"model.pretrained={p!r}: give true, false or a speech_to_text .ckpt to continue from")
            return require_path("model.pretrained", p, "file")
        return None

    # -- model ------------------------------------------------------------------------------------------------
    def build_training_module(self, spec: SpeechToTextSpec, data: SpeechData):
        m = spec.model
        norm = text_norm(spec)
        ckpt = self._continue_from(spec)
        if m.arch == "whisper":
            net, meta, report, pretrained_encoder = self._whisper_net(spec, data, ckpt, norm)
        else:
            net, meta, report, pretrained_encoder = self._ctc_net(spec, data, ckpt, norm)
        if m.freeze_encoder:
            for p in net.backbone.parameters():
                p.requires_grad_(False)
        module = SpeechModule(net.train(), meta, spec.train, kind=m.arch, vocabulary=data.vocabulary, text=data.text,
                              norm=norm, val_texts=[it.utt.text for it in data.val_items],
                              pretrained_encoder=pretrained_encoder and not m.freeze_encoder,
                              max_tokens=int(meta.arch.get("max_tokens", m.max_tokens)))
        return module, report

    def _whisper_net(self, spec, data, ckpt, norm):
        m = spec.model
        if ckpt is not None:
            old, state = read_checkpoint(ckpt, task=self.name)
            net = self.load_net(old, state, ckpt)
            meta = whisper_meta(old.backbone or WHISPER, dict(old.arch["whisper_config"]), old.arch["tokenizer_json"],
                                old.arch.get("suppress", ()), old.arch.get("suppress_begin", ()), norm, m.max_tokens)
            report = LoadReport(source=str(ckpt), loaded=list(net.state_dict()))
            return net, meta, report, True
        folder = find_whisper(m.encoder)
        config = whisper_config().to_dict()
        if m.pretrained:
            model = load_whisper(folder)
            report = LoadReport(source=f"{m.encoder} ({folder.source}: {folder.path})", loaded=list(model.state_dict()))
        else:
            model, report = build_whisper(config), None
        meta = whisper_meta(m.encoder, config, folder.tokenizer_json, folder.suppress, folder.suppress_begin, norm,
                            m.max_tokens)
        return WhisperNet(model), meta, report, bool(m.pretrained)

    def _ctc_net(self, spec, data, ckpt, norm):
        m = spec.model
        vocab = CtcVocabulary.from_texts(data.train_texts, extra=m.vocabulary)
        data.set_vocabulary(vocab)
        if ckpt is not None:
            old, state = read_checkpoint(ckpt, task=self.name)
            if meta_kind(old) != "ctc":
                raise SpecError(f"model.pretrained: {ckpt} is a whisper model; continue it with model.arch=whisper")
            arch = {k: v for k, v in old.arch.items() if k not in ("kind", "vocabulary", "text_norm")}
            meta = ctc_meta(old.backbone, arch, vocab, norm)
            net = build_ctc_net(meta.arch)
            report = transfer_ctc_weights(net, strip_prefix(state, "net."), str(ckpt), old.arch["vocabulary"],
                                          vocab.tokens)
            c = report.characters
            log.info("continuing from %s: characters kept %s, new %s, dropped %s", ckpt,
                     *("".join(c[k]) or "none" for k in ("kept", "new", "dropped")))
            return net, meta, report, old.arch["encoder"] == "whisper"
        if m.encoder == WHISPER:
            arch = {"encoder": "whisper", "whisper_config": whisper_config().to_dict(),
                    "whisper_layers": m.whisper_layers, "dropout": m.dropout, "n_mels": N_MELS}
        else:
            arch = {"encoder": "conv", "conv": m.conv.model_dump(), "dropout": m.dropout, "n_mels": N_MELS}
        meta = ctc_meta(m.encoder, arch, vocab, norm)
        net = build_ctc_net(meta.arch)
        report = None
        if m.encoder == WHISPER and m.pretrained:
            folder = find_whisper(m.encoder)
            encoder = {f"backbone.encoder.{k[len('model.encoder.'):]}": v for k, v in whisper_state(folder).items()
                       if k.startswith("model.encoder.")}
            report = transfer_weights(net, encoder, f"{m.encoder} encoder ({folder.source}: {folder.path})")
        return net, meta, report, m.encoder == WHISPER and bool(m.pretrained)

    def build_net(self, meta: ModelMeta) -> nn.Module:
        if meta_kind(meta) == "whisper":
            return WhisperNet(build_whisper(meta.arch["whisper_config"]))
        return build_ctc_net(meta.arch)

    def named_model(self, name: str, device: str = "cpu") -> Predictor | None:
        """`-m whisper_tiny_en`: the pretrained zoo model as it is (zero-shot), when `name` is an audio zoo entry."""
        from ...zoo import get_entry

        try:
            entry = get_entry(name)
        except ModelError:
            return None
        if entry.modality != "audio":
            raise ModelError(f"-m {name}: a {entry.modality} model cannot transcribe speech; give {WHISPER}, a "
                             "speech_to_text .ckpt or an exported .onnx")
        folder = find_whisper(entry.name)
        net = WhisperNet(load_whisper(folder)).eval().to(device)
        meta = whisper_meta(entry.name, whisper_config().to_dict(), folder.tokenizer_json, folder.suppress,
                            folder.suppress_begin, TextNorm(), 96)
        meta = meta.with_updates(arch={k: v for k, v in meta.arch.items() if k != "text_norm"})

        @torch.inference_mode()
        def run(*inputs: torch.Tensor) -> list[torch.Tensor]:
            return [net(*(x.to(device) for x in inputs)).cpu()]

        return Predictor(meta, run, "pytorch", folder.path / "model.bin", net=net)

    def model_names(self) -> list[str]:
        from ...zoo import list_models

        return [e.name for e in list_models() if e.modality == "audio"]

    def example_inputs(self, meta: ModelMeta, batch: int = 1) -> tuple[torch.Tensor, ...]:
        return meta.example_inputs(batch, sizes={"frames": 300, "tokens": 8})

    def spec_for_model(self, spec: SpeechToTextSpec, meta: ModelMeta) -> SpeechToTextSpec:
        """data.text as the model was trained with (a CTC vocabulary depends on it)."""
        norm = meta_norm(meta)
        if norm is None or norm == text_norm(spec):
            return spec
        log.info("using the model's transcript normalisation: %s", norm_dict(norm))
        data = spec.data.model_copy(update={"text": spec.data.text.model_copy(update=norm_dict(norm))})
        return spec.model_copy(update={"data": data})

    def describe_model(self, meta: ModelMeta) -> dict[str, str]:
        info = super().describe_model(meta)
        kind = meta_kind(meta)
        if kind == "ctc":
            chars = "".join(c for c in meta.classes if c != BLANK)
            info["classes"] = f"{len(meta.classes)} CTC symbols (blank + {chars!r})"
            info["encoder"] = str(meta.arch.get("encoder"))
        else:
            info["classes"] = "Whisper's tokenizer (51864 tokens)"
        info["arch"] = kind
        return info

    # -- evaluate ---------------------------------------------------------------------------------------------
    def transcribe_items(self, spec, predictor: Predictor, data: SpeechData, items: list) -> tuple[list[str], float]:
        """Transcripts of `items` in their order and the seconds of compute they took."""
        e = spec.evaluation
        transcriber = Transcriber(predictor, text_norm(spec), e.decoding, e.beam_size)
        ordered = eval_order(items)
        hyps: dict[int, str] = {}
        loader = data.loader(ordered, False, e.batch_size)
        for features, frames, _, _, indices in usable_batches(loader, data.skipped):
            for i, text in zip(indices.tolist(), transcriber(features, frames)):
                hyps[ordered[i].index] = text
        return [hyps.get(it.index) for it in items], transcriber.compute_seconds

    def evaluate(self, spec: SpeechToTextSpec, predictor: Predictor, data: SpeechData, out_dir: Path) -> dict[str, Any]:
        data.scan("val")
        items = data.val_items
        if not items:
            raise DataError("data.val_manifest has no usable utterances to evaluate")
        hyps, seconds = self.transcribe_items(spec, predictor, data, items)
        scored = [(it, h) for it, h in zip(items, hyps) if h is not None]
        if not scored:
            raise DataError("data.val_manifest: no utterance could be read; see skipped_utterances")
        refs = [it.utt.text for it, _ in scored]
        out = [h for _, h in scored]
        scores = wer_cer(refs, out)
        rows = utterance_rows([it.where for it, _ in scored], refs, out)
        for row, (it, _) in zip(rows, scored):
            row.update({"audio": str(it.utt.audio), "duration": round(it.utt.duration, 3)})
        write_utterance_csv(out_dir / "utterances.csv", rows)
        audio_seconds = sum(it.utt.duration for it, _ in scored)
        worst = worst_utterances(rows, spec.evaluation.worst)
        if worst:
            log.info("worst utterances (errors / words):")
            for row in worst:
                log.info("  %s  %d/%d  ref: %s | hyp: %s", row["id"], row["errors"], row["words"], row["reference"],
                         row["hypothesis"])
        return {**scores, "decoding": spec.evaluation.decoding, "audio_seconds": round(audio_seconds, 2),
                "real_time_factor": round(seconds / max(audio_seconds, 1e-9), 4),
                "utterances_csv": str(out_dir / "utterances.csv"),
                f"skipped_{self.item_kind}": skipped_report(data.skipped), "warnings": list(data.warnings),
                "model": predictor.info}

    # -- inference --------------------------------------------------------------------------------------------
    def _inputs(self, spec) -> list[tuple[str, Path]]:
        from ...audio.io import AUDIO_EXTENSIONS
        from ...audio.manifest import read_manifest

        value = spec.inference.audio
        if not value:
            raise SpecError("inference.audio is not set: give an audio file, a folder of them, or a NeMo manifest")
        path = require_path("inference.audio", value)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
            if not files:
                raise DataError(f"inference.audio: {path} holds no audio files ({', '.join(AUDIO_EXTENSIONS)})")
            return [(str(p.relative_to(path)), p) for p in files]
        if path.suffix.lower() in (".json", ".jsonl"):
            utts, skipped = read_manifest(path, norm=TextNorm(), max_duration=None, check_audio=False)
            for entry in skipped:
                log.warning("inference.audio: skipped %s", entry)
            return [(f"{path.name}:{u.line}", u.audio) for u in utts]
        return [(path.name, path)]

    def inference(self, spec: SpeechToTextSpec, predictor: Predictor, out_dir: Path) -> dict[str, Any]:
        from ...audio.io import load_audio
        from ...audio.subtitles import write_srt

        inf = spec.inference
        transcriber = Transcriber(predictor, text_norm(spec), inf.decoding, inf.beam_size)
        whisper = transcriber.kind == "whisper"
        segmenter = None
        if inf.vad:
            from ...audio.vad import SpeechSegmenter

            segmenter = SpeechSegmenter()
        results, bad = [], {}
        srt_dir = out_dir / "srt"
        for where, path in self._inputs(spec):
            try:
                wave = load_audio(path, SAMPLE_RATE)
            except DataError as e:
                bad[where] = str(e)
                continue
            duration = len(wave) / SAMPLE_RATE
            if segmenter is not None:
                spans = segmenter.segments(wave, SAMPLE_RATE, threshold=inf.vad_threshold, min_silence=inf.min_silence,
                                           max_segment=inf.max_segment)
            else:
                spans = [(s, min(duration, s + inf.max_segment)) for s in np.arange(0, duration, inf.max_segment)]
            pieces = [torch.from_numpy(np.ascontiguousarray(wave[int(a * SAMPLE_RATE):int(b * SAMPLE_RATE)]))
                      for a, b in spans]
            texts: list[str] = []
            for start in range(0, len(pieces), inf.batch_size):
                chunk = pieces[start:start + inf.batch_size]
                features, frames = features_of(chunk, 30.0 if whisper else None)
                texts += transcriber(features, frames)
            segments = [{"start": round(float(a), 3), "end": round(float(b), 3), "text": t}
                        for (a, b), t in zip(spans, texts) if t]
            row = {"audio": str(path), "where": where, "duration": round(duration, 3),
                   "text": " ".join(s["text"] for s in segments), "segments": segments}
            if inf.srt:
                srt = srt_dir / (Path(where.replace(":", "_")).with_suffix(".srt"))
                write_srt(srt, [(s["start"], s["end"], s["text"]) for s in segments])
                row["srt"] = str(srt)
            results.append(row)
        predictions = out_dir / "transcripts.json"
        atomic_write_json(predictions, results)
        if bad:
            log.warning("inference.audio: skipped %d recording(s), e.g. %s: %s", len(bad), *next(iter(bad.items())))
        return {self.item_kind: len(results), f"skipped_{self.item_kind}": skipped_report(bad),
                "decoding": inf.decoding, "vad": inf.vad, "predictions": str(predictions), "model": predictor.info}

    # -- export -----------------------------------------------------------------------------------------------
    def export_graph(self, net: nn.Module, meta: ModelMeta, spec) -> ExportGraph:
        """The network with its linear layers' weights stored transposed (so dynamic INT8 quantises them); logits
        [batch, steps, symbols] (ctc) or [batch, tokens, vocabulary] (whisper: features and the token prefix in)."""
        axes = {"logits": {0: "batch", 1: "tokens" if meta_kind(meta) == "whisper" else "steps"}}
        return ExportGraph(with_transposed_linears(net), self.output_names, output_axes=axes)

    def export_files(self, meta: ModelMeta, out_dir: Path) -> dict[str, str]:
        """whisper: the encoder and decoder as two more ONNX files (FP32 and INT8), which evaluate and inference
        use in place of the one-graph model.onnx / model_int8.onnx beside them."""
        if meta_kind(meta) != "whisper":
            return {}
        from safetensors.torch import load_file

        net = self.build_net(meta)
        net.load_state_dict(load_file(str(Path(out_dir) / "model.safetensors")))
        return export_whisper_halves(net.eval(), meta, Path(out_dir))

    def check_export(self, spec, net: nn.Module, graph: ExportGraph, onnx_path: Path, probe) -> dict:
        """Logits within export.parity_tolerance, and the same greedy transcripts (ctc) on the probe utterances."""
        from ...optimize import verify_export
        from ...optimize.runtime import OnnxModel

        result = verify_export(net, onnx_path, probe, atol=spec.export.parity_tolerance, rtol=0)
        if meta_kind_of(net) == "ctc":
            with torch.inference_mode():
                eager = greedy_ctc(net(*probe))
            onnx = greedy_ctc(torch.from_numpy(OnnxModel(onnx_path)(*(x.numpy() for x in probe))[0]))
            result["same_transcripts"] = eager == onnx
            if eager != onnx:
                raise ModelError(f"{onnx_path} transcribes the probe utterances differently from PyTorch; export "
                                 "with a smaller export.parity_tolerance after checking the graph")
        return result

    # -- dataset_convert --------------------------------------------------------------------------------------
    def dataset_convert(self, spec: SpeechToTextSpec, results: Path | None, model=None) -> dict[str, Any]:
        """A folder of audio + transcripts (dataset_convert.audio_dir) or a path,text CSV -> a NeMo manifest."""
        from ...audio.convert import manifest_from_csv, manifest_from_folder

        c = spec.dataset_convert
        if bool(c.audio_dir) == bool(c.csv):
            raise SpecError("dataset_convert needs one of dataset_convert.audio_dir=DIR or dataset_convert.csv=FILE")
        out = Path(c.output) if c.output else (results / "manifest.json" if results else None)
        if out is None:
            raise SpecError("dataset_convert needs dataset_convert.output=FILE.json (or -r DIR)")
        if c.audio_dir:
            count, skipped = manifest_from_folder(require_path("dataset_convert.audio_dir", c.audio_dir, "dir"), out,
                                                  transcript_ext=c.transcript_ext)
        else:
            count, skipped = manifest_from_csv(require_path("dataset_convert.csv", c.csv, "file"), out)
        for entry in skipped[:5]:
            log.warning("skipped %s", entry)
        log.info("wrote %d utterances to %s (%d skipped)", count, out, len(skipped))
        report = {"manifest": str(out), "utterances": count, "skipped": {"count": len(skipped), "items": skipped}}
        if results is not None:
            atomic_write_json(results / "dataset_convert.json", report)
        return report


def meta_kind_of(net: nn.Module) -> str:
    return "whisper" if isinstance(net, WhisperNet) else "ctc"


TASK = SpeechToTextTask()
