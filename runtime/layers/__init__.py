"""ragloom.runtime.layers."""
