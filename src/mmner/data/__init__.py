"""Data: the `Post` record, readers for every input format, the data-dir lookup, datasets and collate.

Kept import-light on purpose: `import mmner.data` must not pull in torch, so the CLI starts fast and
`mmner score` works without the model stack. Import the submodules you need
(`mmner.data.readers`, `mmner.data.datadir`, `mmner.data.post`).
"""
