"""Records of the batches domain."""
