"""Merging task vectors: the method registry, adapter-space merges and their output (a model folder or
a LoRA adapter), the parameter-conflict metrics, and the bridge to mergekit."""
