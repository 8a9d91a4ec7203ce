"""Queue modes: what a pull selects, what a worker runs, and what a seal writes."""
