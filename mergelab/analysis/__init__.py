"""Pure read-side analysis of stored rows and hidden states: the paper's equations and statistics,
hidden-state similarity, views of a study, the protocol's tables, the paper's recomputation."""
