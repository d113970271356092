"""log.txt records a run's INFO lines whichever way the verb was called (CLI or Python API)."""
from __future__ import annotations

import logging

from transferkit.engine.run import RunFolder

log = logging.getLogger("transferkit")


def test_an_api_caller_that_set_no_level_still_gets_info_lines_in_log_txt(tmp_path, monkeypatch):
    ours = logging.getLogger("transferkit")
    monkeypatch.setattr(ours, "level", logging.NOTSET)  # a fresh Python session: WARNING, inherited from the root
    monkeypatch.setattr(logging.getLogger(), "level", logging.WARNING)
    with RunFolder(tmp_path / "a"):
        log.info("the plan of this run")
        with RunFolder(tmp_path / "b"):  # a verb inside a verb (automl -> train)
            log.info("a trial's line")
        log.debug("not recorded")
    assert "INFO transferkit: the plan of this run" in (tmp_path / "a" / "log.txt").read_text()
    assert "a trial's line" in (tmp_path / "b" / "log.txt").read_text()
    assert "not recorded" not in (tmp_path / "a" / "log.txt").read_text()
    assert ours.level == logging.NOTSET  # the caller's setting is back


def test_a_caller_that_asked_for_debug_keeps_debug(tmp_path, monkeypatch):
    ours = logging.getLogger("transferkit")
    monkeypatch.setattr(ours, "level", logging.DEBUG)
    with RunFolder(tmp_path / "a"):
        log.debug("details")
    assert "details" in (tmp_path / "a" / "log.txt").read_text()
    assert ours.level == logging.DEBUG
