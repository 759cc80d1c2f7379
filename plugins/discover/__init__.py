"""Discover: find submissions on disk and the files that define each challenge's entry points, without running them."""
