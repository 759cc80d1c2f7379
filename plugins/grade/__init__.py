"""Grade: case records, the pure rubric, and the hooks that let a plugin replace or amend the scoring."""
