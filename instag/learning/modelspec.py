"""What the paper's models are, without torch: their names, which take padded bags of any
length, the fc baseline's fixed clip, the recipe's learning rates (imported by the CLI, which
must start without torch)."""

TORCH_MODELS = ("att", "att_uniform", "fc_t", "fc", "rnn")
MASKED_MODELS = ("att", "att_uniform", "fc_t")  # those that take bags of any length, padded
MODEL_NAMES = (*TORCH_MODELS, "rf")
ATTENTION_EPS = 1e-7
FC_INSTANCES = 10  # the fc baseline flattens OpenMIC's fixed 10-instance clips

# Learning rates of the paper's recipe; fc follows the authors' code.
DEFAULT_LR = {"att": 5e-4, "att_uniform": 5e-4, "fc_t": 5e-4, "rnn": 5e-4, "fc": 1e-4}
