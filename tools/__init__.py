"""segwal.tools: what the ``segwal`` command runs (inspect, verify, repair, dump, crashtest)."""
