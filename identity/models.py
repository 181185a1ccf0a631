"""Records of the identity domain."""
