"""Backfill: the replay's snapshot rows and files, as-of joins, training sets (local and on Ray)."""
