"""What a run prints as it goes: plain lines for cron logs, a progress bar on a terminal, and
the summary line at the end."""

from __future__ import annotations

import sys
import time

from instag.cli.console import console
from instag.tagging.counts import RunCounts
from instag.tagging.results import FileResult


class LogReporter:
    """Plain lines for cron logs: every failure, a progress line every 30 s. With `quiet`,
    only news: a failure this run found (not one the cache remembers from an earlier run), so
    that a nightly job whose library has not changed prints nothing and cron mails nothing."""

    def __init__(self, quiet: bool, verb: str = "tagging") -> None:
        self.clock = time.monotonic
        self.quiet = quiet
        self.verb = verb
        self.err = console(stderr=True)
        self.last = self.start = self.clock()
        self.known = 0  # failures the cache remembered, counted so far

    def started(self, counts: RunCounts, provider: str | None) -> None:
        if not self.quiet:
            on = f" (scoring on {provider})" if provider else ""
            self.err.print(f"{self.verb} {plural(counts.total, 'file')}{on}", markup=False)

    def file_done(self, result: FileResult, counts: RunCounts) -> None:
        known, self.known = counts.failed_known > self.known, counts.failed_known
        if not result.ok and not (self.quiet and known):
            self.err.print(f"{result.status}: {result.display_path}: {result.reason}",
                           markup=False)
        self.show_progress(counts)

    def embedded(self, counts: RunCounts) -> None:
        self.show_progress(counts)

    def show_progress(self, counts: RunCounts) -> None:
        if not self.quiet and self.clock() - self.last > 30:
            self.last = self.clock()
            left = counts.eta(self.clock() - self.start)
            self.err.print(f"{counts.progressed}/{counts.total} files done, "
                           f"{counts.embedded_s / 3600:.2f} h of audio embedded so far"
                           + ("" if left is None else f", about {duration(left)} left"),
                           markup=False)

    def note(self, message: str) -> None:
        self.err.print(f"note: {message}", markup=False)

    def close(self) -> None:
        pass


class RichReporter(LogReporter):
    """The same, with a progress bar on a terminal: files, hours of audio, files/s, ETA."""

    def started(self, counts: RunCounts, provider: str | None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        super().started(counts, provider)
        self.progress = Progress(
            TextColumn(f"[bold]{self.verb}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[hours]:.2f} h embedded"), TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[left]}"), console=self.err)
        self.task = self.progress.add_task(self.verb, total=counts.total, hours=0.0, rate="",
                                           left="")
        self.progress.start()

    def show_progress(self, counts: RunCounts) -> None:
        if "progress" not in self.__dict__:  # closed: the run's last lines are printed
            return
        elapsed = self.clock() - self.start
        rate = counts.embedded_s / max(elapsed, 1e-9)
        left = counts.eta(elapsed)
        self.progress.update(self.task, completed=counts.progressed,
                             hours=counts.embedded_s / 3600, rate=f"{rate:.0f}x real time",
                             left="" if left is None else f"{duration(left)} left")

    def close(self) -> None:
        """Take the bar off the terminal, once (what is printed next starts on a line of its
        own)."""
        if (progress := self.__dict__.pop("progress", None)) is not None:
            progress.stop()


def duration(seconds: float) -> str:
    """h:mm:ss, as a person reads a time left."""
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def reporter_for(quiet: bool, verb: str) -> LogReporter:
    return RichReporter(quiet, verb) if sys.stderr.isatty() and not quiet else \
        LogReporter(quiet, verb)


def summary_line(counts: RunCounts, verb: str) -> str:
    """`8 of 9 files tagged (5 from the cache); failed: 1 empty (1 known from an earlier
    run)`: the files counted from the cache are among those tagged."""
    ok_cached = counts.from_cache - counts.failed_known
    text = f"{counts.ok} of {plural(counts.done, 'file')} {verb} ({ok_cached} from the cache)"
    if counts.failed:
        text += "; failed: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.failed.items()))
        if counts.failed_known:
            text += f" ({counts.failed_known} known from an earlier run)"
    if counts.file_tags_outcomes:
        text += "; file tags: " + file_tags_line(counts.file_tags_outcomes)
    return text


def file_tags_line(outcomes: dict) -> str:
    """What happened to the files' own tags, in words and in a fixed order (written,
    unchanged, ...): `instag tag --write-tags` and `instag write-tags` say it alike."""
    said = {"would_change": "would change (dry run)"}
    known = {str(getattr(o, "value", o)): n for o, n in outcomes.items()}
    return ", ".join(f"{plural(n, 'file') if i == 0 else n} {said.get(o, o)}" for i, (o, n) in
                     enumerate((o, known[o]) for o in FILE_TAG_OUTCOMES if known.get(o)))


FILE_TAG_OUTCOMES = ("written", "unchanged", "would_change", "unsupported", "failed")
