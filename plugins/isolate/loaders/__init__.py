"""Runtime loaders for the sandbox child: one module per runtime, loaded by path (see child._import_entries)."""
