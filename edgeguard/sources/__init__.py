"""Where images come from: the watched inbox folder (and, later, a camera)."""
