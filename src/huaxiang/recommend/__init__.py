"""Recommendations from the store: a trained model, top-k with reasons, cold start; search."""
