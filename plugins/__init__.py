"""The grader, as pytest plugins in data-flow order: discover -> isolate and run -> compare -> grade -> report."""
