"""Where images come from: the watched inbox folder, and the camera adapters (camera/)."""
