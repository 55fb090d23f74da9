"""`Run`: the one way to tag a library. It walks the paths with an engine (this machine's
decode pool and cache, or a Ray cluster), feeds each result, in walk order, to its outputs
(`outputs.sinks`: the tags file, the summary, segment exports, plots, the files' own tags)
and hands the result on. When the engine is done the outputs go into place in the reverse
order of `outputs` (a segments folder named before the tags file moves in after it). A run
that fails or is stopped, or whose caller stops iterating, leaves every previous output as it
was.

    run = Run([Path.home() / "Music"], TagOptions(), [TagsFile("tags.csv")])
    for result in run:          # or run.run() for the counts alone
        ...
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path

from instag.common.errors import UsageError
from instag.common.spelling import choice, output, said
from instag.engines.local.run import TagRun
from instag.engines.local.run import tag as tag_locally
from instag.engines.ray.pipeline import Engine, RayRun, tag_on_ray
from instag.features.logmel import LogMel, Spectrogram
from instag.outputs.plot import MAX_COLUMNS
from instag.outputs.sinks import FileTags, RunContext, Sink, TagsFile
from instag.outputs.writers import Format
from instag.tagging.counts import RunCounts
from instag.tagging.job import Reporter
from instag.tagging.options import TagOptions
from instag.tagging.results import FileResult
from instag.tagging.walk import as_paths, check_roots


class Run:
    """A tagging job over `paths` with `options`, on `engine` (`address`: the Ray cluster),
    feeding `outputs`. Every output's settings and target are checked here, before anything
    runs; iterate the run for its FileResults (one per file, in walk order), or call `run()`.
    With `options.write_tags`, the files' own tags are written too (a `FileTags` output)."""

    def __init__(self, paths: Iterable[str | Path], options: TagOptions | None = None,
                 outputs: Sequence[Sink] = (), *, engine: Engine | str = Engine.LOCAL,
                 address: str | None = None, reporter: Reporter | None = None,
                 inputs: Sequence[Path] = (), before_commit: Callable[[], None] = lambda: None,
                 listed: bool = False) -> None:
        self.paths = as_paths(paths)
        if not listed:  # (a list of files, `--paths-from`: a missing one is that file's result)
            check_roots(self.paths)  # an unmounted disk must not replace good output
        self.options = opts = options or TagOptions()
        if not isinstance(opts, TagOptions):
            raise UsageError(f"options={opts!r:.60}: not a TagOptions",
                             "e.g. instag.TagOptions(bag=10)")
        self.config = config = opts.resolve()  # every default read once, here
        self._log_mel: LogMel | None = None
        self.engine = engine = choice(Engine, engine, "engine")
        if address is not None and engine is not Engine.RAY:
            raise UsageError(f"{said('address', address)}: means something only with "
                             f"{said('engine', 'ray')}", "leave it out, or run on Ray")
        if config.write_tags and any(isinstance(o, FileTags) for o in outputs):
            raise UsageError(f"{said('write_tags', 'TagWriting(...)')} and a FileTags output: "
                             "the files' own tags named twice", "give one of them")
        extra = [FileTags(config.write_tags)] if config.write_tags else []
        self._started = False
        # file tags first: the other outputs record each file as it is after its write
        self.outputs: list[Sink] = sorted([*extra, *outputs],
                                          key=lambda o: not isinstance(o, FileTags))
        self.before_commit = before_commit
        tags_file = next((o for o in self.outputs if isinstance(o, TagsFile)), None)
        self.context = RunContext(
            inputs=[*self.paths, *inputs, *([config.compute.thresholds_file]
                                            if config.compute.thresholds_file else [])],
            library=self.paths, protected=config.local.protected_paths(),
            extensions=config.walk.extensions,
            run_info=self._run_info, thresholds=lambda: self.engine_run.thresholds,
            spectrogram=self._spectrogram)
        for sink in self.outputs:
            sink.check(self.context)
        _refuse_shared_targets(self.outputs)
        if self.engine is Engine.RAY:
            previous = (tags_file.path if tags_file and tags_file.format == Format.PARQUET
                        else None)
            self.engine_run: TagRun | RayRun = tag_on_ray(self.paths, config, reporter,
                                                          address, previous)
        else:
            self.engine_run = tag_locally(self.paths, config, reporter)
        self.context.counts = self.engine_run.counts
        self.context.note = self.engine_run.reporter.note
        if isinstance(self.engine_run, TagRun):
            self.context.same_audio = self.engine_run.same_audio
            self.context.rekey = self.engine_run.rekey

    @property
    def counts(self) -> RunCounts:
        """What the run has done so far (files, audio, failures, file tags)."""
        return self.engine_run.counts

    @property
    def summary(self) -> RunCounts:
        warnings.warn("Run.summary is now Run.counts", DeprecationWarning, stacklevel=2)
        return self.counts

    @property
    def reporter(self) -> Reporter:
        return self.engine_run.reporter

    @property
    def thresholds(self) -> dict[str, float]:
        return self.engine_run.thresholds

    def __iter__(self) -> Iterator[FileResult]:
        if self._started:  # its outputs are in place and its counts are this run's
            raise UsageError("this Run has run", "make a new Run to run again")
        self._started = True
        with ExitStack() as stack:
            feeds = [stack.enter_context(o.opened(self.context)) for o in self.outputs]
            for result in self.engine_run:
                for feed in feeds:
                    feed(result)
                yield result
            for output in self.outputs:  # all still ours, before the first goes into place
                getattr(output, "still_claimed", lambda: None)()
            self.before_commit()
        # every output is in place

    @property
    def files_not_written(self) -> int:
        """Files of the output folders (segments, plots) that could not be written."""
        return sum(getattr(getattr(o, "writer", None), "failed", 0) for o in self.outputs)

    def run(self) -> RunCounts:
        """Run to the end (the outputs in place); the counts of what happened."""
        for _ in self:
            pass
        return self.counts

    def _spectrogram(self, path: Path, duration: float) -> Spectrogram:
        """`--plot`'s spectrogram: VGGish's front end, loaded on the first figure."""
        if self._log_mel is None:
            self._log_mel = LogMel.of(self.config.compute.vggish, self.config.compute.embedder)
        return self._log_mel.spectrogram(path, duration, MAX_COLUMNS,
                                         resampler=self.config.compute.resampler)

    def _run_info(self) -> dict:
        """What the tags file says of the run: the model, the bags, the thresholds applied."""
        compute = self.config.compute
        rule = ("--threshold" if compute.threshold is not None else "--thresholds-file" if
                compute.thresholds_file else "the model's tuned thresholds (0.5 where none)")
        return {"model": str(compute.model),
                "bag": "full" if compute.bag is None else str(compute.bag),
                "threshold_rule": rule, "thresholds": self.engine_run.thresholds}


def _refuse_shared_targets(outputs: Sequence[Sink]) -> None:
    """Two outputs on one path would overwrite each other."""
    seen: dict[Path, str] = {}
    for sink in outputs:
        where = getattr(sink, "path", None) or getattr(sink, "folder", None)
        if where is None or str(where) == "-":
            continue
        resolved, named = Path(where).resolve(), _named(sink)
        if resolved in seen:
            raise UsageError(f"{where}: named twice, as {seen[resolved]} and as {named}",
                             "give each output its own path")
        seen[resolved] = named


def _named(sink: Sink) -> str:
    """A sink as its caller named it: `--summary` on the command line, `SummaryFile` in Python."""
    name = type(sink).__name__
    return output(flag, name) if (flag := getattr(sink, "flag", None)) else name


def tag(paths: Iterable[str | Path], options: TagOptions | None = None,
        reporter: Reporter | None = None, outputs: Sequence[Sink] = ()) -> Run:
    """Tag every audio file under `paths` (files or folders) on this machine: iterate the
    result for FileResults, each with its status, bags, probabilities and segments; `outputs`
    as the CLI writes them (`TagsFile`, `SummaryFile`, `SegmentsFolder`, `PlotFolder`,
    `FileTags`)."""
    return Run(paths, options, outputs, reporter=reporter)
