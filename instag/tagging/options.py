"""What a tagging run can be told, engine-neutral: the CLI, the Python API and the beets plugin
all build a `TagOptions`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from instag.common import locations
from instag.common.devices import Device
from instag.features.decode import AUDIO_EXTENSIONS
from instag.features.resample import DEFAULT_RESAMPLER, Resampler
from instag.tagging.tagwriting import TagWriting

CACHE_FILE = "tags.sqlite"
STALL_TIMEOUT = 300.0  # seconds without progress before a decoder is stopped
MAX_DURATION = 12 * 3600.0  # seconds: longer than any album side, shorter than a runaway header


@dataclass(frozen=True)
class TagOptions:
    """Everything a run can be told; the defaults are the CLI's."""

    model: Path | None = None  # None: $INSTAG_MODEL, else the model `instag setup` installed
    vggish: str | None = None
    pca: Path | None = None
    resampler: Resampler = DEFAULT_RESAMPLER
    bag_size: int | None = None  # None: the whole file is one bag
    hop: int | None = None
    threshold: float | None = None  # None: the model's tuned thresholds (else 0.5)
    thresholds_file: Path | None = None
    device: Device = Device.AUTO
    jobs: int | None = None  # decoding processes; None: one per CPU (never more than files)
    stall_timeout: float = STALL_TIMEOUT  # seconds a decoder may make no progress on a file
    max_duration: float | None = MAX_DURATION  # seconds; longer files are `too_long`
    cache: Path | None = None  # None: tags.sqlite in the user cache directory
    force: bool = False
    extensions: tuple[str, ...] = AUDIO_EXTENSIONS
    include_hidden: bool = False
    wait: bool = False
    write_tags: TagWriting | None = None  # also write each tagged file's own tags

    def cache_path(self) -> Path:
        return Path(self.cache) if self.cache else locations.cache_dir() / CACHE_FILE

    def protected_paths(self) -> list[Path]:
        """instag's own files that no output may replace: the cache, its WAL files, its lock."""
        db = self.cache_path()
        return [db.with_name(db.name + s) for s in ("", "-wal", "-shm", ".lock")]
