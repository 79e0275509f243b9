"""The declared rule files a worker serves (segments, content map, triggers), reloaded when they change on disk.

The three files are loaded together and checked against each other (the content map and the triggers may only name
declared segments), at start-up and again whenever any of them changes. A worker refuses to start with a bad set (the
error names the file and line). While running, a changed set that is refused (a bad file, a renamed segment another
file still names, any error while loading) leaves all three versions in service; the error is logged and shown at
``GET /v1/models`` on each changed file. Memberships are re-evaluated with a new version at each user's next event or
clock check.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Generic, TypeVar

from models import insight, rulefile
from models.content import ContentMap, load_content
from models.segments import SegmentSet, load_segments
from models.triggers import TriggerSet, load_triggers
from models.variables import CLOCK_VARIABLES, VARIABLES

log = logging.getLogger(__name__)
Loaded = TypeVar("Loaded", SegmentSet, ContentMap, TriggerSet)
Stamp = tuple[int, int] | None


class RuleFile(Generic[Loaded]):
    """One rule file: the version in service, and why the last change on disk was refused, if it was."""

    def __init__(self, path: Path, current: Loaded, stamp: Stamp) -> None:
        self.path = path
        self.current: Loaded = current
        #: The file's modification time and size when it was last read: a change is looked for against it.
        self.stamp = stamp
        self.error: str | None = None
        self.loaded_at = time.time()

    def serve(self, loaded: Loaded) -> None:
        if loaded.version != self.current.version:
            log.info("%s: version %s in service (was %s)", self.path, loaded.version, self.current.version)
            self.loaded_at = time.time()
        self.current, self.error = loaded, None

    def status(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "version": self.current.version,
            "loaded_at": self.loaded_at,
            "error": self.error,
        }


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
        """Load the three files, or raise :class:`~models.rulefile.RuleFileError` (``file:line: reason``) or
        :class:`OSError`: the caller refuses to start."""
        paths = Path(segments_file), Path(content_file), Path(triggers_file)
        stamps = [_stat(path) for path in paths]  # before reading: an edit made while reading is seen next time
        segments, content, triggers = _load(*paths)
        self.segments: RuleFile[SegmentSet] = RuleFile(paths[0], segments, stamps[0])
        self.content: RuleFile[ContentMap] = RuleFile(paths[1], content, stamps[1])
        self.triggers: RuleFile[TriggerSet] = RuleFile(paths[2], triggers, stamps[2])
        self._default_consent = {purpose: True for purpose in default_consent}

    def reload_if_changed(self) -> bool:
        """If any file changed on disk, load all three again exactly as at start-up; True when they are in service.

        Never raises, so the caller can run it on a timer for the life of the worker: a refused set leaves every
        version in service and sets ``error`` on each file whose version on disk is not in service.
        """
        files: tuple[RuleFile[Any], ...] = (self.segments, self.content, self.triggers)
        stamps = [_stat(file.path) for file in files]
        changed = [file for file, stamp in zip(files, stamps, strict=True) if stamp != file.stamp]
        if not changed:
            return False
        for file, stamp in zip(files, stamps, strict=True):
            file.stamp = stamp
        try:
            segments, content, triggers = _load(self.segments.path, self.content.path, self.triggers.path)
        except Exception as error:  # any: a loader bug must neither stop reloading nor leave half a change in service
            expected = isinstance(error, (ValueError, OSError))  # a refusal: its message names the file at fault
            reason = str(error) if expected else f"{type(error).__name__}: {error}"
            for file in files:
                if file in changed or file.error is not None:  # the version on disk is not in service, for this reason
                    file.error = reason
            names = ", ".join(str(file.path) for file in changed)
            log.error("%s refused, the versions in service stay: %s", names, reason, exc_info=not expected)
            return False
        self.segments.serve(segments)
        self.content.serve(content)
        self.triggers.serve(triggers)
        return True

    def current(self) -> insight.Rules:
        """The versions in service, as the pure transitions take them."""
        return insight.Rules(self.segments.current, self.triggers.current, self._default_consent)


def _load(segments_file: Path, content_file: Path, triggers_file: Path) -> tuple[SegmentSet, ContentMap, TriggerSet]:
    segments = load_segments(_read(segments_file), source=str(segments_file), known=VARIABLES, clock=CLOCK_VARIABLES)
    names = [segment.name for segment in segments.segments]
    content = load_content(_read(content_file), source=str(content_file), segments=names)
    triggers = load_triggers(_read(triggers_file), source=str(triggers_file), known=VARIABLES, segments=names)
    return segments, content, triggers


def _read(path: Path) -> str:
    return rulefile.decode(path.read_bytes(), str(path))


def _stat(path: Path) -> Stamp:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size
