"""The tagging job, engine-neutral: its options, the identities of files and results, bags,
scoring with an exported ONNX model, thresholds, attention segments, results, and the per-file
steps both engines run. Needs an exported model, never torch."""
