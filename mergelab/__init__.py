"""MergeLab: why merging LoRA adapters collapses, and which task groups won't.

The engine (this package) never imports Streamlit; only ``mergelab.ui`` does.
"""

__version__ = "0.1.0"
