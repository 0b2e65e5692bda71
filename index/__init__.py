"""Offset index layer: log index -> location, O(1), mmap-backed for sealed segments.

``segwal.index`` never imports ``segwal.engine``.
"""
