"""One rule per kind of contact with a user's files: inputs (what may be read), targets (what
may be written)."""
