"""instag: recognise musical instruments in music libraries (Gururani et al., ISMIR 2019)."""

__version__ = "0.1.0"
