"""A loaded base model whose weights are swapped to become an expert or a merge, scored on tasks by one
scorer per architecture."""
