"""Training code for the models that consume the shards (see its issue)."""
