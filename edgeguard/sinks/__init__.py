"""Where results go: the outbox (redacted images only), failed/ (raw files with a reason),
and the journal that makes the step between them crash-safe."""
