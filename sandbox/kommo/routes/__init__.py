"""HTTP edges of the Kommo simulator, one module per resource family."""
