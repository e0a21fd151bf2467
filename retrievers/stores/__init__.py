"""ragloom.retrievers.stores."""
