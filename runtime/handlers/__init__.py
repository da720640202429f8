"""Thin Lambda entry points, one per kind of job."""
