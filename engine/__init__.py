"""segwal.engine: the StorageEngine facade (under construction)."""
