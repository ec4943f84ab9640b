"""Global descriptors: the backbone registry, extraction runners (torch, ONNX, device
decoding, Ray), the embedding cache, foreground regions, mirrored descriptors.

Imports local, data and util.
"""
