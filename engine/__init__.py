"""migrate-tui engine: round-based SRC/DST traversal, coordinator gates, level cache sealed into DuckDB."""

__version__ = "0.1.0"
