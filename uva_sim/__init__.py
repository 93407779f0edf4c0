"""Simulators for demonstrations and closed-loop evaluation (PushT). Imports uva_io/ only."""
