"""Verification helpers shared by the tests and the scripts: random programs and the
differential comparison of backends."""
