"""Records of the qc domain."""
