"""Pricing: the table, its files and importers, and priced usage."""
