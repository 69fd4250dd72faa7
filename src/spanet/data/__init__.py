"""Reading re-ID datasets, turning them into tensors and sampling batches."""
