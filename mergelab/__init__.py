"""MergeLab: why merging LoRA adapters collapses, and which task groups won't.

The engine (this package) never imports Streamlit; only ``mergelab.ui`` does.
"""

__version__ = "0.2.4"  # bumped with a CHANGELOG.md entry whenever behaviour changes

from . import threads as _threads

# Before torch loads OpenMP: passive waiting and a thread count from the usable cores (mergelab.threads).
_threads.prepare_environment()
_threads.limit_loaded_blas()
