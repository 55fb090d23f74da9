"""The tagging path: walk a library, get each file's features (from the cache or the decode
pool), group instances into bags, score them with an exported ONNX model, turn attention into
time segments, and write the results. Needs an exported model, never torch."""
