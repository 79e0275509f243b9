"""The declared rule files a worker serves (segments, content map, triggers), reloaded when they change on disk.

A worker refuses to start with a bad file (the error names the file and line). While running, an edited file is
loaded strictly; if it is refused, the error is logged and shown at ``GET /v1/models`` and the version already
loaded keeps serving. Memberships are re-evaluated with a new version at each user's next event or clock check.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from models import insight
from models.content import ContentMap, load_content
from models.segments import SegmentSet, load_segments
from models.triggers import TriggerSet, load_triggers
from models.variables import CLOCK_VARIABLES, VARIABLES

log = logging.getLogger(__name__)
Loaded = TypeVar("Loaded", SegmentSet, ContentMap, TriggerSet)


class RuleFile(Generic[Loaded]):
    """One rule file: the version in service, and the error of the last refused edit, if any."""

    def __init__(self, path: str | Path, load: Callable[[str, str], Loaded]) -> None:
        self.path = Path(path)
        self._load: Callable[[str, str], Loaded] = load
        self._stamp = self._stat()
        self.current: Loaded = load(self.path.read_text(encoding="utf-8"), str(self.path))
        self.error: str | None = None
        self.loaded_at = time.time()

    def reload_if_changed(self) -> bool:
        """Load the file again if it changed since the last look; True when a new version is in service."""
        stamp = self._stat()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            loaded = self._load(self.path.read_text(encoding="utf-8"), str(self.path))
        except (OSError, UnicodeDecodeError, ValueError) as error:
            self.error = str(error)
            log.error("%s refused, still serving version %s: %s", self.path, self.current.version, error)
            return False
        previous, self.current, self.error, self.loaded_at = self.current.version, loaded, None, time.time()
        if loaded.version != previous:
            log.info("%s: version %s in service (was %s)", self.path, loaded.version, previous)
        return True

    def status(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "version": self.current.version,
            "loaded_at": self.loaded_at,
            "error": self.error,
        }

    def _stat(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size


class Rules:
    """The segment file, the content map and the trigger rules, checked against each other."""

    def __init__(
        self,
        segments_file: str | Path,
        content_file: str | Path,
        triggers_file: str | Path,
        *,
        default_consent: frozenset[str] = frozenset(),
    ) -> None:
        self.segments: RuleFile[SegmentSet] = RuleFile(segments_file, self._load_segments)
        self.content: RuleFile[ContentMap] = RuleFile(content_file, self._load_content)
        self.triggers: RuleFile[TriggerSet] = RuleFile(triggers_file, self._load_triggers)
        self._default_consent = {purpose: True for purpose in default_consent}

    def reload_if_changed(self) -> None:
        self.segments.reload_if_changed()
        self.content.reload_if_changed()
        self.triggers.reload_if_changed()

    def current(self) -> insight.Rules:
        """The versions in service, as the pure transitions take them."""
        return insight.Rules(self.segments.current, self.triggers.current, self._default_consent)

    def _load_segments(self, text: str, source: str) -> SegmentSet:
        return load_segments(text, source=source, known=VARIABLES, clock=CLOCK_VARIABLES)

    def _load_content(self, text: str, source: str) -> ContentMap:
        return load_content(text, source=source, segments=[s.name for s in self.segments.current.segments])

    def _load_triggers(self, text: str, source: str) -> TriggerSet:
        names = [s.name for s in self.segments.current.segments]
        return load_triggers(text, source=source, known=VARIABLES, segments=names)
