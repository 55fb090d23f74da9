"""The paper's learning half: OpenMIC-2018 data, the models (with their inference helpers), the
training recipe, run directories, metrics, reports, and export to the ONNX file tagging loads.
Needs torch and scikit-learn (the `train` extra); never imports the tagging path."""
