"""Export (torch, onnx): ONNX with the spatial normalization as standard ops, FP16 ONNX, INT8, TensorRT."""
