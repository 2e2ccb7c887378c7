"""Stage 1, data: Danbooru metadata readers, mirrors and archives, which images are present,
the sample, image preparation, families and near-duplicates, the subset and its shards, tag
statistics. Imports the foundation only (config, settings, registry, vocab, metrics,
folders, locks)."""
