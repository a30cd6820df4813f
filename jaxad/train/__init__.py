"""Training engine: train state, device mesh and sharding, checkpoints, loops."""
