"""Speech segments of long recordings, found with the Silero VAD model that the `silero-vad` wheel ships
(its ONNX file, run by ONNX Runtime; the wheel's own code and torch are not used).

The model reads 16 kHz audio in 512-sample windows (32 ms), each preceded by the last 64 samples of the
window before it, and carries a recurrent state from window to window; it gives one speech probability
per window. Segments open where the probability reaches `threshold`, close after `min_silence` seconds
below `threshold - 0.15` (hysteresis, so a word's quiet end does not split it), lose blips shorter than
`min_speech`, gain `pad` seconds on each side (never overlapping a neighbour), and are cut at the least
speech-like window when longer than `max_segment`, so each piece fits a model's input window.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ..errors import ModelError, first_line
from .io import resample

VAD_SAMPLE_RATE = 16000
WINDOW = 512
CONTEXT = 64
_INSTALL = "pip install --no-deps silero-vad  (transferkit reads only its ONNX file)"


def silero_onnx_path() -> Path:
    """The ONNX file inside the installed silero-vad wheel; ModelError saying how to install it otherwise."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"cutting long audio at pauses needs the Silero VAD model: {_INSTALL}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "data" / "silero_vad.onnx"
        if path.is_file():
            return path
    raise ModelError(f"the installed silero-vad package has no data/silero_vad.onnx; reinstall it: {_INSTALL}")


class SpeechSegmenter:
    """Speech segments of a wave by Silero VAD. Not thread-safe: one instance per thread."""

    def __init__(self, model_path: str | Path | None = None, threads: int = 1):
        import onnxruntime as ort

        path = Path(model_path) if model_path is not None else silero_onnx_path()
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = max(1, int(threads))
        options.log_severity_level = 3  # the wheel's graphs carry unused initializers ORT warns about
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception types for unreadable graphs
            raise ModelError(f"cannot load the Silero VAD model {path} ({first_line(e)}); {_INSTALL}") from e
        self._names = self._input_names()
        outputs = [o.name for o in self._session.get_outputs()]
        state_out = [n for n in outputs if "state" in n.lower()]
        if len(outputs) != 2 or len(state_out) != 1:
            raise ModelError(f"{path} does not look like Silero VAD (outputs {outputs}); {_INSTALL}")
        self._prob_out = next(n for n in outputs if n not in state_out)
        self._state_out = state_out[0]

    def _input_names(self) -> dict[str, str]:
        """Which graph input is the audio, the recurrent state and the sample rate (by name, then by type)."""
        names: dict[str, str] = {}
        for inp in self._session.get_inputs():
            if "state" in inp.name.lower():
                names["state"] = inp.name
                dims = [d if isinstance(d, int) else 1 for d in inp.shape]  # batch axis -> 1
                self._state_shape = tuple(dims)
            elif inp.type == "tensor(int64)":
                names["sr"] = inp.name
            else:
                names["audio"] = inp.name
        if set(names) != {"audio", "state", "sr"}:
            raise ModelError(f"the Silero VAD graph has inputs {list(names.values())}, expected audio, state and "
                             f"sample rate; {_INSTALL}")
        return names

    def probabilities(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        """Speech probability of each 32 ms window (window i covers samples [512 i, 512 (i + 1)) at 16 kHz)."""
        audio = resample(np.asarray(wave, dtype=np.float32), sample_rate, VAD_SAMPLE_RATE)
        count = -(-len(audio) // WINDOW)
        padded = np.zeros(CONTEXT + count * WINDOW, np.float32)
        padded[CONTEXT:CONTEXT + len(audio)] = audio
        state = np.zeros(self._state_shape, np.float32)
        rate = np.array(VAD_SAMPLE_RATE, dtype=np.int64)
        probs = np.empty(count, np.float32)
        for i in range(count):
            chunk = padded[i * WINDOW: (i + 1) * WINDOW + CONTEXT][None, :]
            prob, state = self._session.run([self._prob_out, self._state_out],
                                            {self._names["audio"]: chunk, self._names["state"]: state,
                                             self._names["sr"]: rate})
            probs[i] = float(np.asarray(prob).reshape(-1)[0])
        return probs

    def segments(self, wave: np.ndarray, sr: int, *, threshold: float = 0.5, min_silence: float = 0.3,
                 max_segment: float = 25.0, min_speech: float = 0.25, pad: float = 0.1
                 ) -> list[tuple[float, float]]:
        """Speech stretches of `wave` as (start, end) seconds, in order, none longer than `max_segment`."""
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
        if max_segment <= 2 * pad + WINDOW / VAD_SAMPLE_RATE:
            raise ValueError(f"max_segment={max_segment} s is too short to hold a padded window")
        duration = len(wave) / sr
        probs = self.probabilities(wave, sr)
        return _segments_from_probabilities(probs, duration, threshold=threshold, min_silence=min_silence,
                                            max_segment=max_segment, min_speech=min_speech, pad=pad)


def _segments_from_probabilities(probs: np.ndarray, duration: float, *, threshold: float, min_silence: float,
                                 max_segment: float, min_speech: float, pad: float) -> list[tuple[float, float]]:
    step = WINDOW / VAD_SAMPLE_RATE
    low = max(threshold - 0.15, 0.01)
    quiet_windows = max(1, int(round(min_silence / step)))
    spans: list[tuple[int, int]] = []  # [first, last) window indices
    start, quiet = None, 0
    for i, p in enumerate(probs):
        if start is None:
            if p >= threshold:
                start, quiet = i, 0
        elif p < low:
            quiet += 1
            if quiet >= quiet_windows:
                spans.append((start, i - quiet + 1))
                start = None
        else:
            quiet = 0
    if start is not None:
        spans.append((start, len(probs) - quiet))
    spans = [s for s in spans if (s[1] - s[0]) * step >= min_speech]

    pieces: list[tuple[int, int]] = []
    longest = max(1, int((max_segment - 2 * pad) / step))
    for first, last in spans:
        while last - first > longest:
            # cut at the least speech-like window in the second half of the allowed length
            lo, hi = first + longest // 2, first + longest
            cut = lo + int(np.argmin(probs[lo:hi]))
            pieces.append((first, cut))
            first = cut
        pieces.append((first, last))

    segments: list[tuple[float, float]] = []
    for k, (first, last) in enumerate(pieces):
        begin, end = first * step, min(last * step, duration)
        prev_end = segments[-1][1] if segments else 0.0
        next_begin = pieces[k + 1][0] * step if k + 1 < len(pieces) else duration
        begin = max(begin - pad, prev_end, 0.0)
        end = min(end + pad, max(end, (end + next_begin) / 2), duration)
        if end > begin:
            segments.append((round(begin, 3), round(end, 3)))
    return segments
