"""Report: the grade matrix in the terminal, grades.md, results.json, report.html and SVG badges."""
