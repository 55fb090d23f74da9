"""The engines that run a tagging job over many files: `local` (a decode pool, a SQLite cache,
one machine) and `ray` (a Ray Data pipeline on a cluster). They never import each other."""
