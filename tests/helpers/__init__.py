"""Helpers shared by the test modules: references, random shop logs, stores, privacy checks."""
