"""Audio to OpenMIC's features: decoding, resampling to 16 kHz, VGGish, ReLU, PCA, uint8, in
0.96 s instances. Knows nothing of bags, scoring or training."""
