"""The local engine: decode workers (`pool`), the SQLite cache and its lock (`cache`), the run
loop, sessions and runs (`run`), and `instag write-tags` (`retag`)."""
