"""Integrations of segwal with Python Raft libraries."""
