"""Converters from other frameworks' checkpoint formats to dg-jax modules."""
