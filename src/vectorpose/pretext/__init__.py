"""The pretext tasks of VectorPOSE as pure functions: arrays and tensors in, arrays and tensors out."""
