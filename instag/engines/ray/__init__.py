"""The Ray engine: the same per-file job as a Ray Data pipeline (`pipeline`), each file's rows
reassembled and checked at the driver (`reassembly`)."""
