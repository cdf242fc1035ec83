"""Key-free strategies: Bayesian search over declared knobs, and a student that sets them."""
