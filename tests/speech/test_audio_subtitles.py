"""SRT subtitles from timed segments."""
from __future__ import annotations

import pytest

from transferkit.audio.subtitles import format_timestamp, read_srt, srt_text, write_srt


@pytest.mark.parametrize("seconds, text", [(0, "00:00:00,000"), (1.5, "00:00:01,500"), (61.0004, "00:01:01,000"),
                                           (3725.9996, "01:02:06,000"), (0.0005, "00:00:00,000")])
def test_format_timestamp(seconds, text):
    assert format_timestamp(seconds) in (text, text[:-1] + "1")  # half a millisecond may round either way


def test_format_timestamp_refuses_negative_and_nan():
    assert format_timestamp(2.25, ".") == "00:00:02.250"
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            format_timestamp(bad)


def test_write_srt(tmp_path):
    path = write_srt(tmp_path / "talk.srt", [(0.5, 2.25, "hello there"), (3.0, 4.0, "  "),
                                             (4.5, 7.125, "second line\n\nwith a break"), (8, 9, "caf\u00e9")])
    assert path.read_text(encoding="utf-8") == (
        "1\n00:00:00,500 --> 00:00:02,250\nhello there\n\n"
        "2\n00:00:04,500 --> 00:00:07,125\nsecond line\nwith a break\n\n"
        "3\n00:00:08,000 --> 00:00:09,000\ncaf\u00e9\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.srt"]
    assert read_srt(path) == [(0.5, 2.25, "hello there"), (4.5, 7.125, "second line\nwith a break"),
                              (8.0, 9.0, "caf\u00e9")]
    assert srt_text([]) == ""
    with pytest.raises(ValueError, match="ends before"):
        srt_text([(2.0, 1.0, "x")])
