"""Small measurement scripts, run by hand (`python -m devnet.bench.<name>`); not tests."""
