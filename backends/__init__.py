"""Backends: the NumPy reference interpreter and ONNX export / ONNX Runtime."""
