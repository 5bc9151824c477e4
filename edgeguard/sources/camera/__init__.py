"""Camera adapters, one module each: picamera2, V4L2 (USB webcams), a file as a camera;
the common interface in :mod:`.base`. :mod:`edgeguard.camera.sources` chooses one."""
