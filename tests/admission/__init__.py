"""Admission: Authorize and RecordUsage, budgets, reservations, windows, bodies, recovery."""
