"""Mountable components built on the public ``core`` API."""
