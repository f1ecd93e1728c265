"""Data package: the YAML search spaces and the reference genotypes (``reference/*.json``),
installed as ``nas_reid.search_spaces`` (see ``nas_reid.space.reference.shipped_file``)."""
