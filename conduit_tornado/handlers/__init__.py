"""HTTP handlers. ``base`` holds the shared base; the rest are thin endpoint classes."""
