"""Write a :class:`~uqbench.deploy.graph.Graph` as a standard int8 ``.tflite`` file.

The flatbuffer is built with the schema's object API that the ``tflite-micro`` wheel carries
(``schema_py_generated``), so no TensorFlow is needed; the file runs in TFLite Micro, the
``tflite-micro`` Python interpreter, or a vendor tool. Batch is 1 (MCU inference), activations
are NHWC, convolution weights OHWI, depthwise weights 1HWC, exactly as TFLite lays them out.
"""

from __future__ import annotations

import numpy as np
from uqbench.deploy.graph import Graph

ACTIVATIONS = {"none": 0, "relu": 1, "relu6": 3}  # TFLite's ActivationFunctionType


def _schema():
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    return schema


def to_tflite(graph: Graph) -> bytes:
    """The ``.tflite`` bytes of ``graph`` (batch 1)."""
    import flatbuffers

    s = _schema()
    buffers = [s.BufferT()]  # buffer 0: the empty sentinel
    tensors, index = [], {}

    def add_tensor(name, shape, dtype, qparams=None, data=None):
        t = s.TensorT()
        t.name = name
        t.shape = list(shape)
        t.type = {"int8": s.TensorType.INT8, "int32": s.TensorType.INT32}[dtype]
        if data is not None:
            b = s.BufferT()
            b.data = list(np.ascontiguousarray(data).tobytes())
            buffers.append(b)
            t.buffer = len(buffers) - 1
        else:
            t.buffer = 0
        if qparams is not None:
            q = s.QuantizationParametersT()
            q.scale = [float(v) for v in qparams.scale]
            q.zeroPoint = [int(v) for v in qparams.zero_point]
            q.quantizedDimension = int(qparams.axis)
            t.quantization = q
        tensors.append(t)
        index[name] = len(tensors) - 1
        return index[name]

    for t in graph.tensors.values():
        shape = t.shape if t.data is not None else (1, *t.shape[1:])
        add_tensor(t.name, shape, t.dtype, t.qparams, t.data)

    codes, operators = [], []

    def opcode(builtin):
        for k, c in enumerate(codes):
            if c.builtinCode == builtin:
                return k
        c = s.OperatorCodeT()
        c.builtinCode = builtin
        c.deprecatedBuiltinCode = min(builtin, 127)
        c.version = 1
        codes.append(c)
        return len(codes) - 1

    for op in graph.ops:
        o = s.OperatorT()
        inputs = [index[n] for n in op.inputs]
        act = ACTIVATIONS[op.options.get("activation", "none")]
        if op.kind in ("conv2d", "depthwise_conv2d"):
            conv = op.kind == "conv2d"
            options = s.Conv2DOptionsT() if conv else s.DepthwiseConv2DOptionsT()
            options.padding = s.Padding.VALID
            options.strideH, options.strideW = op.options["stride"]
            options.dilationHFactor = options.dilationWFactor = 1
            options.fusedActivationFunction = act
            if not conv:
                options.depthMultiplier = 1
            o.opcodeIndex = opcode(
                s.BuiltinOperator.CONV_2D if conv else s.BuiltinOperator.DEPTHWISE_CONV_2D
            )
            o.builtinOptionsType = (
                s.BuiltinOptions.Conv2DOptions if conv else s.BuiltinOptions.DepthwiseConv2DOptions
            )
        elif op.kind == "fully_connected":
            options = s.FullyConnectedOptionsT()
            options.fusedActivationFunction = act
            options.keepNumDims = False
            o.opcodeIndex = opcode(s.BuiltinOperator.FULLY_CONNECTED)
            o.builtinOptionsType = s.BuiltinOptions.FullyConnectedOptions
        elif op.kind in ("average_pool_2d", "max_pool_2d"):
            options = s.Pool2DOptionsT()
            options.padding = s.Padding.VALID
            options.strideH, options.strideW = op.options["stride"]
            options.filterHeight, options.filterWidth = op.options["filter"]
            options.fusedActivationFunction = act
            o.opcodeIndex = opcode(
                s.BuiltinOperator.AVERAGE_POOL_2D
                if op.kind == "average_pool_2d"
                else s.BuiltinOperator.MAX_POOL_2D
            )
            o.builtinOptionsType = s.BuiltinOptions.Pool2DOptions
        elif op.kind == "add":
            options = s.AddOptionsT()
            options.fusedActivationFunction = act
            o.opcodeIndex = opcode(s.BuiltinOperator.ADD)
            o.builtinOptionsType = s.BuiltinOptions.AddOptions
        elif op.kind == "mul":
            options = s.MulOptionsT()
            options.fusedActivationFunction = act
            o.opcodeIndex = opcode(s.BuiltinOperator.MUL)
            o.builtinOptionsType = s.BuiltinOptions.MulOptions
        elif op.kind == "pad":
            (top, bottom), (left, right) = op.options["paddings"]
            paddings = np.array([[0, 0], [top, bottom], [left, right], [0, 0]], dtype=np.int32)
            inputs.append(add_tensor(f"{op.outputs[0]}/paddings", (4, 2), "int32", data=paddings))
            options = s.PadOptionsT()
            o.opcodeIndex = opcode(s.BuiltinOperator.PAD)
            o.builtinOptionsType = s.BuiltinOptions.PadOptions
        elif op.kind == "reshape":
            shape = np.array([1, *graph.tensors[op.outputs[0]].shape[1:]], dtype=np.int32)
            inputs.append(add_tensor(f"{op.outputs[0]}/shape", (len(shape),), "int32", data=shape))
            options = s.ReshapeOptionsT()
            options.newShape = [int(v) for v in shape]
            o.opcodeIndex = opcode(s.BuiltinOperator.RESHAPE)
            o.builtinOptionsType = s.BuiltinOptions.ReshapeOptions
        else:
            raise ValueError(f"no .tflite operator for {op.kind!r}")
        o.builtinOptions = options
        o.inputs = inputs
        o.outputs = [index[n] for n in op.outputs]
        operators.append(o)

    subgraph = s.SubGraphT()
    subgraph.tensors = tensors
    subgraph.operators = operators
    subgraph.inputs = [index[n] for n in graph.inputs]
    subgraph.outputs = [index[n] for n in graph.outputs]
    subgraph.name = "main"
    model = s.ModelT()
    model.version = 3
    model.description = "uqbench int8 export"
    model.operatorCodes = codes
    model.subgraphs = [subgraph]
    model.buffers = buffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def run_tflite_micro(model: bytes, x: np.ndarray) -> np.ndarray:
    """Outputs of the ``tflite-micro`` interpreter (TFLite Micro's reference kernels) on int8
    inputs ``x`` [B, ...], one example at a time (the model has batch 1): [B, sum of output
    sizes], the outputs flattened and concatenated in order."""
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_bytes(model, arena_size=max(len(model) * 4, 1 << 20))
    count = _schema().Model.GetRootAsModel(model, 0).Subgraphs(0).OutputsLength()
    outputs = []
    for example in np.asarray(x, dtype=np.int8):
        interpreter.set_input(example[None], 0)
        interpreter.invoke()
        row = [np.array(interpreter.get_output(k)).reshape(1, -1) for k in range(count)]
        outputs.append(np.concatenate(row, 1))  # every output, logits first
        interpreter.reset()
    return np.concatenate(outputs)
