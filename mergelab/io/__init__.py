"""Reading what users point MergeLab at: base models (folders, hub ids, GGUF files, packaged weights),
LoRA adapters and fine-tuned checkpoints as task vectors, and content digests of them."""
