"""Generated music for benchmarks (`instag.features.music`), written in chunks."""

from __future__ import annotations

from instag.features.music import generate_music


def write_music(path, seconds: float, sr: int = 44100, seed: int = 0, chunk_s: float = 5.0,
                **kwargs) -> None:
    """Write in chunks (libsndfile can crash writing a long OGG in one call)."""
    import soundfile as sf

    with sf.SoundFile(str(path), "w", sr, 2, **kwargs) as f:
        done = 0.0
        while done < seconds:
            part = min(chunk_s, seconds - done)
            f.write(generate_music(part, sr, seed + int(done)))
            done += part
