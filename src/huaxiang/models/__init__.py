"""Trained models: each with fit / predict (or score) / save / load."""
