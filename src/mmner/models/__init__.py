"""Models: one module per system, all behind the `Tagger` interface and the registry."""
