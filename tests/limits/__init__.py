"""Limits: reset periods and budget alerts."""
