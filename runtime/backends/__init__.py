"""ragloom.runtime.backends."""
