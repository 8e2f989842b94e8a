"""What this machine has (CPU, CUDA GPUs, TensorRT, ONNX Runtime providers) and thin wrappers over those libraries."""
