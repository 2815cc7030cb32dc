"""Pricing: the cost of a request from its model and token counts, in integer micro-USD."""
