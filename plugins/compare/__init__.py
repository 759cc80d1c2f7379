"""Compare: one comparator for the whole grader."""
