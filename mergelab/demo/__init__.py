"""The bundled demo study: real text tasks built offline, LoRA adapters trained on MiniLM."""
