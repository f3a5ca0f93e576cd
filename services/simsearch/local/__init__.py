"""Local mode: the same services as processes on loopback (`simsearch up/scale/down`)."""
