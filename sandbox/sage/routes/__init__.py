"""HTTP edges of the Sage simulator, one module per resource family."""
