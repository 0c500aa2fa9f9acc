"""Lab checks, one module per chapter (registered with labs.lab)."""
