"""The grader's plugins, in data-flow order: configure -> discover -> isolate and run -> compare -> grade -> report."""

pytest_plugins = [
    "plugins.config",
    "plugins.discover.plugin",
    "plugins.isolate.plugin",
    "plugins.grade.plugin",
    "plugins.report.plugin",
    "plugins.report.html",
    "plugins.ternary",  # --train-data, MLX skips and the report sections of the ternary-training challenge
]
