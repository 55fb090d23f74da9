"""One tagging job: resolved options, an engine (local or Ray) and the outputs it feeds. The
CLI, the Python API and the beets plugin all start a job here."""
