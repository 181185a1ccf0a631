"""Records of the labels domain."""
