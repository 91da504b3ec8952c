"""Matrix-Pano foundation: conventions, scenes and their sources, renderers, shards and the CLI."""
