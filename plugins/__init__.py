"""The grader, as pytest plugins in data-flow order: discover -> isolate and run -> compare -> grade -> report."""

# The plugin modules, in data-flow order: configure -> discover -> isolate and run -> compare -> grade -> report.
# conftest.py registers them; recovery and the shard merge read the list to rebuild the grades.md sections offline.
GRADER_PLUGINS = [
    "plugins.config",
    "plugins.discover.plugin",
    "plugins.isolate.schedule",  # xdist: submissions as units, a speed phase after correctness, capped worker threads
    "plugins.isolate.plugin",
    "plugins.grade.plugin",
    "plugins.report.plugin",
    "plugins.report.samples",  # several samples per model; after plugins.report.plugin (terminal order)
    "plugins.report.html",
    "plugins.report.speed_section",  # speed cases against the fastest peer, a grades.md section
    "plugins.report.placement",  # which machine, GPU and workers ran the cases, a grades.md section
    "plugins.report.interface",  # native or adapter (code lines) per submission, a grades.md section
    "plugins.report.comparisons",  # --baseline and --judge-grades; after plugins.report.plugin (terminal order)
    "plugins.ternary",  # --train-data, MLX skips and the report sections of the ternary-training challenge
]
