"""migrate-tui operator console (Textual)."""
