"""Spec ids and requirement tables."""
