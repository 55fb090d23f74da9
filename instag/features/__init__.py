"""Audio to OpenMIC's features: decoding, resampling to 16 kHz, VGGish, ReLU, PCA, uint8, in
0.96 s instances. Knows nothing of bags, scoring or training."""

# Bumped whenever decoding or embedding changes its output (or which failures it reports): part
# of every features identity, so caches and resumed outputs recompute, and cached failures are
# retried, after an upgrade that changes what a file's features would be.
FEATURES_VERSION = "3"  # 3: MP3s that do not state their length decoded to their end
