"""The grader's base: what every stage shares and nothing of a stage owns (the bottom layer of ``plugins/``).

- :mod:`plugins.base.records`: the typed case record and the outcome of one request (the one gate to every report);
- :mod:`plugins.base.inert`: escaping of submission text for each place it is shown;
- :mod:`plugins.base.wording`: speed in words and the Markdown and HTML table writers;
- :mod:`plugins.base.host`: facts about the host (cores, GPUs) and a quiet subprocess helper.

Nothing here imports another package of ``plugins/``; ``selftests/test_layers.py`` holds the layer order.
"""
