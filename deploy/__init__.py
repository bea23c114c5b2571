"""The deploy stage: int8 quantization with TFLite semantics, a host int8 reference, ``.tflite``
export, boards. Imported as ``uqbench.deploy``."""
