"""Benchmarks behind ``clip2 bench``: each returns plain dicts that the CLI prints and writes as JSON."""
