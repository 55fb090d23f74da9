"""What a tagging run can be told, engine-neutral: the CLI, the Python API and the beets plugin
all build a `TagOptions` (flat: one keyword per flag, checked where made). A run resolves it
once, at its start, into a `Config` of one object per concern (`Walk`: what to tag;
`Compute`: features, precision, device, model, bags, thresholds; `Decoding`: limits per file;
`Local`: this machine's workers, cache and lock), with every default (environment,
`settings.json`, what setup installed) read there: the layers below receive values, not
lookups."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from instag.common import locations
from instag.common.devices import Device
from instag.common.errors import UsageError
from instag.common.spelling import choice, option, said
from instag.features.decode import AUDIO_EXTENSIONS
from instag.features.precision import Precision
from instag.features.resample import DEFAULT_RESAMPLER, Resampler
from instag.tagging.bags import check_bag_setting
from instag.tagging.segments import MERGE_GAP, MIN_SEGMENT, SegmentRule
from instag.tagging.tagwriting import TagWriting
from instag.tagging.thresholds import check_threshold

if TYPE_CHECKING:
    from instag.features.embed import Embedder

CACHE_FILE = "tags.sqlite"
STALL_TIMEOUT = 300.0  # seconds without progress before a decoder is stopped
MAX_DURATION = 12 * 3600.0  # seconds: longer than any album side, shorter than a runaway header


# the keywords of an earlier release, which still work for one more (with a warning)
OLD_KEYWORDS = {"bag_size": "bag", "stall_timeout": "file_timeout", "include_hidden": "hidden"}


@dataclass(frozen=True)
class TagOptions:
    """Everything a run can be told; the defaults are the CLI's."""

    model: Path | None = None  # None: $INSTAG_MODEL, else the model `instag setup` installed
    vggish: str | None = None
    pca: Path | None = None
    resampler: Resampler = DEFAULT_RESAMPLER
    bag: int | None = None  # instances per bag; None: the whole file is one bag
    hop: int | None = None
    threshold: float | None = None  # None: the model's tuned thresholds (else 0.5)
    thresholds_file: Path | None = None
    device: Device = Device.AUTO
    jobs: int | None = None  # decoding processes; None: one per CPU (never more than files)
    file_timeout: float = STALL_TIMEOUT  # seconds a decoder may make no progress on a file
    max_duration: float | None = MAX_DURATION  # seconds; longer files are `too_long`
    cache: Path | None = None  # None: tags.sqlite in the user cache directory
    force: bool = False
    extensions: tuple[str, ...] = AUDIO_EXTENSIONS
    hidden: bool = False  # also walk hidden files and folders
    wait: bool = False
    write_tags: TagWriting | None = None  # also write each tagged file's own tags
    precision: str | None = None  # VGGish's: None: $INSTAG_PRECISION, settings.json, else fp32
    min_segment: float = MIN_SEGMENT  # seconds: a file's shorter segments dropped
    merge_gap: float = MERGE_GAP  # seconds: a file's segments this close are one

    def __post_init__(self) -> None:
        """Checked where they are made: the CLI, the Python API and the beets plugin refuse
        the same settings, before anything runs, each error naming the option as the caller
        spelled it (`--bag 0` from the command line, `bag=0` from Python)."""
        check_bag_setting(self.bag, self.hop)
        for name, value in (("bag", self.bag), ("hop", self.hop), ("jobs", self.jobs)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise UsageError(f"{said(name, value)}: needs a whole number of at least 1",
                                 f"e.g. {said(name, 2)}")
        if self.threshold is not None:
            check_threshold(self.threshold, option("threshold"), f"e.g. {said('threshold', 0.5)}")
        for name, value in (("file_timeout", self.file_timeout),
                            ("max_duration", self.max_duration)):
            if value is not None and not (isinstance(value, int | float) and value > 0
                                          and math.isfinite(value)):
                raise UsageError(f"{said(name, value)}: needs a number of seconds above 0",
                                 f"e.g. {said(name, 300)}")
        self.segment_rule()  # min_segment and merge_gap: seconds, 0 or more
        object.__setattr__(self, "extensions", _extensions(self.extensions))
        if self.write_tags is True:  # as --write-tags: instag's own field, the defaults
            object.__setattr__(self, "write_tags", TagWriting())
        if self.write_tags is not None and not isinstance(self.write_tags, TagWriting):
            raise UsageError(f"{said('write_tags', self.write_tags)}: not a TagWriting",
                             f"e.g. {said('write_tags', 'TagWriting()')} or True")
        # choices given as text (the beets plugin's config, a script) become their enums
        object.__setattr__(self, "device", Device.parse(self.device))
        self.vggish_precision()  # a wrong one is refused here, not mid-run
        object.__setattr__(self, "resampler", choice(Resampler, self.resampler, "resampler"))

    def vggish_precision(self) -> Precision:
        try:
            return Precision(locations.precision(self.precision))
        except ValueError:
            raise UsageError(f"{said('precision', locations.precision(self.precision))}: not "
                             "a precision", "use fp32, int8 or fp16 (CUDA)") from None

    def segment_rule(self) -> SegmentRule:
        return SegmentRule(self.min_segment, self.merge_gap)

    def cache_path(self) -> Path:
        return Path(self.cache) if self.cache else locations.cache_dir() / CACHE_FILE

    def protected_paths(self) -> list[Path]:
        """instag's own files that no output may replace: the cache, its WAL files, its lock."""
        return protected_paths(self.cache_path())

    def resolve(self, scoring: bool = True) -> Config:
        """Every default read now, once (`scoring=False`: a run that only embeds needs no
        model)."""
        return Config(
            walk=Walk(self.extensions, self.hidden),
            compute=Compute(locations.resolve_model(self.model) if scoring else None,
                            locations.vggish_handle(self.vggish),
                            locations.given_pca(self.pca), self.resampler,
                            self.vggish_precision(), self.device, self.bag, self.hop,
                            self.threshold, self.thresholds_file, self.segment_rule()),
            decoding=Decoding(self.file_timeout, self.max_duration),
            local=Local(self.jobs, self.cache_path(), self.wait),
            force=self.force, write_tags=self.write_tags)


@dataclass(frozen=True)
class Walk:
    """What to tag: which files under the paths."""

    extensions: tuple[str, ...]
    hidden: bool


@dataclass(frozen=True)
class Compute:
    """How a file becomes its result: VGGish and PCA at a precision, on a device, then the
    scoring model over bags with thresholds, and the segment rule. Hashable: a process keeps
    its models per `Compute`."""

    model: Path | None  # None: a run that only embeds
    vggish: str  # the hub handle or a SavedModel's folder
    pca: Path | None
    resampler: Resampler
    precision: Precision
    device: Device
    bag: int | None
    hop: int | None
    threshold: float | None
    thresholds_file: Path | None
    segment_rule: SegmentRule  # how a file's segments are drawn from its bags'

    def embedder(self, note: Callable[[str], None] | None = None) -> Embedder:
        """VGGish and PCA as these settings ask (loaded on first use)."""
        from instag.features.embed import Embedder

        return Embedder(self.vggish, self.pca, self.resampler, self.device, note=note,
                        precision=self.precision)


@dataclass(frozen=True)
class Decoding:
    """Limits per file, in either engine."""

    file_timeout: float  # seconds a decoder may make no progress
    max_duration: float | None  # seconds; longer files are `too_long`


@dataclass(frozen=True)
class Local:
    """This machine's engine: decode workers, the cache and whether to wait for its lock."""

    jobs: int | None  # None: one per CPU (never more than files)
    cache: Path
    wait: bool

    def protected_paths(self) -> list[Path]:
        return protected_paths(self.cache)


def protected_paths(cache: Path) -> list[Path]:
    """instag's own files that no output may replace: the cache, its WAL files, its lock."""
    return [cache.with_name(cache.name + s) for s in ("", "-wal", "-shm", ".lock")]


@dataclass(frozen=True)
class Config:
    """A `TagOptions` resolved: what the engines receive."""

    walk: Walk
    compute: Compute
    decoding: Decoding
    local: Local
    force: bool
    write_tags: TagWriting | None


def _extensions(given) -> tuple[str, ...]:
    """Extensions as the walk compares them ('.flac'), from 'mp3,flac' or a list of names
    with or without their dot, in any case; none at all is a usage error (a run would take
    no file and replace a good output with an empty one)."""
    names = given.split(",") if isinstance(given, str) else given
    try:
        found = tuple("." + str(e).strip().lower().lstrip(".") for e in names
                      if str(e).strip().strip("."))
    except TypeError:
        found = ()
    if not found:
        raise UsageError(f"{said('extensions', given)}: no extension in it",
                         f"e.g. {said('extensions', 'mp3,flac')}")
    return found


def _old_keywords(init):
    """TagOptions(bag_size=10) and the other old keywords: as the new ones, with a warning."""
    @functools.wraps(init)
    def accepting(self, *args, **kwargs):
        for old, new in OLD_KEYWORDS.items():
            if old in kwargs and new in kwargs:
                raise UsageError(f"TagOptions({old}=..., {new}=...): {old} is the old name "
                                 f"of {new}", f"give {new}= alone")
            if old in kwargs:
                warnings.warn(f"TagOptions({old}=...) is now TagOptions({new}=...)",
                              DeprecationWarning, stacklevel=2)
                kwargs[new] = kwargs.pop(old)
        init(self, *args, **kwargs)
    return accepting


TagOptions.__init__ = _old_keywords(TagOptions.__init__)  # type: ignore[method-assign]
