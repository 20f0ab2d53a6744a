"""Runtime: the host driver and the backends that carry its command stream."""
