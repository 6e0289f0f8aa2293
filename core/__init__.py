"""Capsule: a transactional document database for AI applications (public API below)."""
