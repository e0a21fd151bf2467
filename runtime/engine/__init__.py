"""ragloom.runtime.engine."""
