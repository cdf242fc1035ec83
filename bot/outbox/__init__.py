"""GitHub writes: the typed writes the engine records, and the worker that makes
each exactly once."""
