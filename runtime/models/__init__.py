"""ragloom.runtime.models."""
