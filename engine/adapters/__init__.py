"""Filesystem adapters: the only code that touches a tree (base: the protocol; local; memory, for tests).

Nothing is imported here: a listing or copy helper process imports engine.adapters.local alone, and
boots faster without the memory adapter's imports."""
