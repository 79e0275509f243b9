"""The rule files a worker serves: loaded together at start-up, and a change on disk put in service only if the new
set of files is one the worker would start with; otherwise the versions in service stay and the error is shown."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import app.rules
from app.rules import Rules
from models.rulefile import RuleFileError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    copies = {name: tmp_path / f"{name}.yaml" for name in ("segments", "content", "triggers")}
    for name, path in copies.items():
        shutil.copy(ROOT / f"{name}.yaml", path)
    return copies


def edit(path: Path, old: str, new: str) -> None:
    """Replace text in a rule file and move its modification time on, as a later edit on disk would."""
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")
    stamp = path.stat().st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(stamp, stamp))


def start(files: dict[str, Path]) -> Rules:
    return Rules(files["segments"], files["content"], files["triggers"])


def line_of(path: Path, text: str) -> int:
    whole = path.read_text(encoding="utf-8")
    return whole.count("\n", 0, whole.index(text)) + 1


def test_an_edited_file_is_put_in_service(files: dict[str, Path]) -> None:
    rules = start(files)
    before = rules.segments.current.version
    assert not rules.reload_if_changed()
    edit(files["segments"], "when: cart_items > 0 and", "when: '  cart_items > 1 and")
    edit(files["segments"], "minutes_since_cart_change >= 120", "minutes_since_cart_change >= 90'")
    assert rules.reload_if_changed()
    assert rules.segments.error is None and rules.segments.current.version != before
    assert rules.segments.current.clock_thresholds == {"minutes_since_cart_change": {90.0}}


def test_renaming_a_segment_other_files_still_name_is_refused_until_they_follow(files: dict[str, Path]) -> None:
    rules = start(files)
    served = rules.segments.current.version
    edit(files["segments"], "  category_binge:", "  deep_browse:")
    content_line = line_of(files["content"], "segment: category_binge")
    assert not rules.reload_if_changed()
    assert rules.segments.error is not None
    assert rules.segments.error.startswith(
        f"{files['content']}:{content_line}: rule 3: unknown segment 'category_binge'"
    )
    assert rules.segments.current.version == served
    assert "category_binge" in {s.name for s in rules.segments.current.segments}

    edit(files["content"], "segment: category_binge", "segment: deep_browse")
    trigger_line = line_of(files["triggers"], "entered: category_binge")
    assert not rules.reload_if_changed()
    message = f"{files['triggers']}:{trigger_line}: trigger 'binge_suggestion': unknown segment 'category_binge'"
    assert rules.content.error is not None and rules.content.error.startswith(message)
    assert rules.segments.error == rules.content.error and rules.triggers.error is None
    assert rules.segments.current.version == served

    edit(files["triggers"], "entered: category_binge", "entered: deep_browse")
    assert rules.reload_if_changed()
    assert "deep_browse" in {s.name for s in rules.segments.current.segments}
    assert rules.triggers.current.triggers[-1].subject == "deep_browse"
    assert (rules.segments.error, rules.content.error, rules.triggers.error) == (None, None, None)


def test_any_error_while_loading_is_shown_on_the_file_and_reloading_goes_on(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = start(files)
    served = rules.segments.current.version

    def broken_loader(*args: object, **kwargs: object) -> None:
        raise IndentationError("unexpected indent")

    monkeypatch.setattr(app.rules, "load_segments", broken_loader)
    edit(files["segments"], "when: orders >= 3", "when: orders >= 4")
    assert not rules.reload_if_changed()
    assert rules.segments.error == "IndentationError: unexpected indent"
    assert rules.segments.current.version == served

    monkeypatch.undo()
    edit(files["segments"], "when: orders >= 4", "when: orders >= 5")
    assert rules.reload_if_changed()
    assert rules.segments.error is None and rules.segments.current.version != served


def test_a_file_that_is_not_utf8_is_refused_with_its_line(files: dict[str, Path]) -> None:
    text = files["triggers"].read_bytes()
    files["triggers"].write_bytes(text.replace(b"Still", b"St\xffill", 1))
    line = text[: text.index(b"Still")].count(b"\n") + 1
    with pytest.raises(RuleFileError, match=rf"^{files['triggers']}:{line}: not valid UTF-8 text \(byte 0xff\)$"):
        start(files)
