"""`RunCounts`: what a run has done so far, counted alike by both engines (each state change of
a file is a method), read by the progress display, the summary line and the exit code."""

from __future__ import annotations

from dataclasses import dataclass, field

from instag.common.status import Status
from instag.tagging.results import FileResult

MIN_FILES_FOR_ETA = 3  # files embedded before an estimate of the time left is shown


@dataclass
class RunCounts:
    """What a run has done so far, counted as it goes (the `--summary` CSV is another thing:
    a row per file)."""

    total: int = 0
    done: int = 0  # files with their result (handed out in walk order)
    from_cache: int = 0  # files for which nothing was decoded in this run
    audio_s: float = 0.0  # of the files finished
    embedded_s: float = 0.0  # audio embedded in this run so far, as it happens
    embedded_files: int = 0  # files whose features this run computed ...
    embedded_files_s: float = 0.0  # ... and their audio
    awaiting_scores: int = 0  # files whose features are known, waiting for their scoring batch
    # what the local engine's cache holds of this run's files (from an earlier run or this one):
    # the next run starts from them
    cached_features: int = 0  # features, or a failure that stays
    failed: dict[Status, int] = field(default_factory=dict)  # status -> count
    failed_known: int = 0  # ... of which the cache (or a previous output) already knew
    # file tags (--write-tags): outcome (written, unchanged, would_change, unsupported,
    # failed) -> files
    file_tags_outcomes: dict[str, int] = field(default_factory=dict)

    def add(self, result: FileResult, from_cache: bool) -> None:
        self.done += 1
        self.from_cache += from_cache
        self.audio_s += result.duration or 0.0
        if not result.ok:
            self.failed[result.status] = self.failed.get(result.status, 0) + 1
            self.failed_known += from_cache

    # each state change of a file, named, so that both engines count alike
    def embedded_audio(self, seconds: float) -> None:
        """More audio went through VGGish (progress between finished files)."""
        self.embedded_s += seconds

    def embedded_file(self, seconds: float) -> None:
        """A file's features are complete (`seconds`: the audio this run embedded of it)."""
        self.embedded_files += 1
        self.embedded_files_s += seconds

    def cached(self, count: int = 1) -> None:
        """The local cache holds the file's features, or a failure that stays."""
        self.cached_features += count

    def file_tags(self, outcome: str) -> None:
        """One file's own tags: written, unchanged, would_change (a dry run), unsupported (a
        format instag does not write) or failed."""
        key = str(getattr(outcome, "value", outcome))
        self.file_tags_outcomes[key] = self.file_tags_outcomes.get(key, 0) + 1

    @property
    def tags_failed(self) -> int:
        return self.file_tags_outcomes.get("failed", 0)

    @property
    def ok(self) -> int:
        return self.done - sum(self.failed.values())

    @property
    def failed_now(self) -> int:
        """Failures this run computed: a permanent failure remembered from an earlier run (the
        same file, unchanged) is listed, but is no news for a nightly job."""
        return sum(self.failed.values()) - self.failed_known

    @property
    def progressed(self) -> int:
        """Files past their decoding and embedding: what a progress display counts."""
        return self.done + self.awaiting_scores

    def eta(self, elapsed: float) -> float | None:
        """Seconds left, from the audio embedded per second so far and the average length of
        the files this run embedded; None until MIN_FILES_FOR_ETA of them are done."""
        if self.embedded_files < MIN_FILES_FOR_ETA or elapsed <= 0 or self.embedded_s <= 0:
            return None
        per_file = self.embedded_files_s / self.embedded_files
        partly = max(0.0, self.embedded_s - self.embedded_files_s)  # of files being embedded
        left = max(0.0, (self.total - self.progressed) * per_file - partly)
        return left / (self.embedded_s / elapsed)
