"""Klaviyo source for dlt."""
