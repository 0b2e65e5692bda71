"""segwal.testing: crash simulation and fault injection for segwal and its users (under construction)."""
