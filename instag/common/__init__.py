"""What every part of instag shares and that knows nothing of instag: errors, atomic writes,
directories and the models' locations, downloads, statuses, devices, the ONNX metadata schema."""

VERSION = "0.1.0"
