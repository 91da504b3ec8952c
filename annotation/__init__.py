"""Annotation: quality filters, VideoLLaMA3 scoring and captioning, manual review (see its issue)."""
