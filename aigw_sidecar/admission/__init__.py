"""Admission: decisions, deny reasons and the admission service."""
