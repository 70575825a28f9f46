"""The benchmark suite: conveyor-asgi measured side by side with three reference servers.

Run it with ``scripts/bench`` (or ``python -m benchmarks``); see README.md beside this file.
"""
