"""segwal's benchmark: segwal side by side with the raw disk limit and the
stores a Python Raft user would pick.  Run ``python -m bench --help``."""
