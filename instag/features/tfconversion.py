"""tf2onnx's conversion of a tf.function, at a quarter of the memory `from_function` takes.

`tf2onnx.convert.from_function` on VGGish's architecture (288 MB of weights) peaked at 15.9 GB
(bench/conversion_memory.py): TensorFlow's freezing held the weights some nine times, its graph
optimiser (grappler) some sixteen times, and tf2onnx's optimiser copies its graph before each of
its 24 passes, each node keeping a copy of its weights per pass, the copies freed only by Python's
cycle collector (the graph is a web of cycles), which seldom ran. Here the same steps run with
the weights out of their way, and the ONNX graph comes out the same (the same operators with
the same attributes, the same weights, the same outputs; only tensor names differ):

- freezing is tf2onnx's large-model freezing (the graph is not loaded back into a function);
- grappler sees each large constant as a read of a variable of its type and shape (it folds
  constants: no op that takes a weight has only constant inputs), and the constants go back
  in after it;
- tf2onnx converts them as its large-model mode does (TensorFlow's import of the graph copies
  no weights; its own large-model path breaks on numpy 2), and its cycles are collected before
  each optimiser pass.
"""

from __future__ import annotations

import gc

HOLLOW_BYTES = 1 << 20  # constants this large wait outside grappler: VGGish's weights, not
# its front end's (grappler folds those)
COLLECT_BYTES = 64 << 20  # weights from which tf2onnx's copies are collected before each pass


def to_onnx(function, signature: list, opset: int):
    """The ONNX model (a ModelProto, its weights inside) of a tf.function with this input
    signature, as tf2onnx's `from_function` makes it."""
    import tensorflow as tf
    from tf2onnx import optimizer, tf_loader
    from tf2onnx.convert import tensor_names_from_structed
    from tf2onnx.tfonnx import process_tf_graph

    concrete = function.get_concrete_function(*signature)
    inputs = [t.name for t in concrete.inputs if t.dtype != tf.resource]
    outputs = [t.name for t in concrete.outputs if t.dtype != tf.resource]
    with tf.device("/cpu:0"):
        hollow, weights = _hollowed(tf_loader.convert_variables_to_constants_large_model(concrete))
        held = sum(len(n.attr["value"].tensor.tensor_content) for n in weights.values())
        with tf.Graph().as_default():
            optimised = tf_loader.tf_optimize(inputs, outputs, hollow)
        del hollow
        frozen, values = _filled(optimised, weights)
        del optimised, weights
        with tf.Graph().as_default() as graph:
            tf.import_graph_def(frozen, name="")
            del frozen
            converted = process_tf_graph(
                graph, const_node_values=values, continue_on_error=True, opset=opset,
                input_names=inputs, output_names=outputs,
                tensors_to_rename=tensor_names_from_structed(concrete, inputs, outputs))
        del values, graph
        # a collection takes ~0.3 s where TensorFlow is loaded: worth it only where the copies
        # are large (on a small model its 26 collections were 97 % of the conversion)
        collect = gc.collect if held >= COLLECT_BYTES else _no_collection
        collect()  # what the conversion left, before the optimiser's first copy
        steps = {name: _collected_first(make, collect)
                 for name, make in optimizer._get_optimizers().items()}
        converted = optimizer.optimize_graph(converted, optimizers=steps)
        model = converted.make_model(f"converted from {concrete.name}")
    del converted
    collect()  # tf2onnx's graph is a web of cycles, and holds the weights
    return model


def _no_collection() -> int:
    return 0


def _collected_first(make, collect):
    """An optimiser pass of tf2onnx's that first frees the graph the pass before it left: a
    web of cycles holding a gigabyte on VGGish, and 24 passes."""
    def made():
        collect()
        return make()
    return made


def _hollowed(graph_def) -> tuple:
    """The graph with each constant of HOLLOW_BYTES or more read from a variable of its type
    and shape instead (a placeholder would do, but grappler takes a placeholder's shape as
    unknown, and folds less around it), and those constants' nodes by name."""
    from tensorflow.core.framework import graph_pb2

    hollow, weights = graph_pb2.GraphDef(), {}
    hollow.versions.CopyFrom(graph_def.versions)
    hollow.library.CopyFrom(graph_def.library)
    for node in graph_def.node:
        tensor = node.attr["value"].tensor if node.op == "Const" else None
        if tensor is None or len(tensor.tensor_content) < HOLLOW_BYTES:
            hollow.node.add().CopyFrom(node)
            continue
        weights[node.name] = node
        handle = hollow.node.add(name=f"{node.name}/hollow", op="VarHandleOp", device=node.device)
        handle.attr["dtype"].type = tensor.dtype
        handle.attr["shape"].shape.CopyFrom(tensor.tensor_shape)
        handle.attr["shared_name"].s = handle.name.encode()
        read = hollow.node.add(name=node.name, op="ReadVariableOp", device=node.device)
        read.input.extend([handle.name, *node.input])
        read.attr["dtype"].type = tensor.dtype
    return hollow, weights


def _filled(graph_def, weights: dict) -> tuple:
    """The graph with the constants `_hollowed` took out back in their placeholders' place, in
    tf2onnx's large-model form: each one's node without its content, and the contents by
    node name (TensorFlow's import of the graph then copies no weights)."""
    from tensorflow.core.framework import graph_pb2

    filled, values = graph_pb2.GraphDef(), {}
    filled.versions.CopyFrom(graph_def.versions)
    filled.library.CopyFrom(graph_def.library)
    for node in graph_def.node:
        held = weights.get(node.name) if node.op == "ReadVariableOp" else None
        if node.op == "VarHandleOp" and node.name.removesuffix("/hollow") in weights:
            continue
        if held is None:
            filled.node.add().CopyFrom(node)
            continue
        const = filled.node.add(name=held.name, op=held.op, device=held.device)
        const.input.extend(held.input)
        const.attr["dtype"].CopyFrom(held.attr["dtype"])
        tensor = held.attr["value"].tensor
        const.attr["value"].tensor.dtype = tensor.dtype
        const.attr["value"].tensor.tensor_shape.CopyFrom(tensor.tensor_shape)
        values[held.name] = tensor.tensor_content
    return filled, values
