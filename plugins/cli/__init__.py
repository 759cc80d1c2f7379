"""The ``kernelgrade`` command: ``new`` scaffolds a model's prompt folders, ``check`` reports how a submission meets the
contracts (entry points, near misses, import side effects in the sandbox, an adapter skeleton), ``grade`` runs the
grading suite. Installed by ``pip install -e .`` (``pyproject.toml``); ``python -m plugins.cli.main`` is the same."""
