"""Privacy on the offline floor: erasure across every store, the noisy segment report."""
