"""Cache store-backed computations across reruns: keyed by the function, the store's file and its
content stamp (which changes on every commit), and the arguments. A page interaction that does not
change the store recomputes nothing. Behind the process's own cache, a DataFrame result is also kept
beside the store (:func:`mergelab.storage.report_cache.cached_frame`, keyed by the store's content,
the study's state files and MergeLab's code), so another dashboard process, or this one after a
restart, reads it instead of computing it again."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pandas as pd
import streamlit as st

from mergelab.storage.report_cache import cached_frame
from mergelab.storage.store import Store

_FUNCTIONS: dict[str, Callable] = {}


def _key_text(value) -> str | None:
    """``value`` as text that differs whenever the value does (for the kept table's key), or None
    when there is none: plain values by repr, containers item by item, DataFrames by a hash of their
    content."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        parts = [_key_text(v) for v in value]
        return None if None in parts else f"{type(value).__name__}({', '.join(parts)})"  # type: ignore[arg-type]
    if isinstance(value, pd.DataFrame):
        try:
            digest = hashlib.sha256(pd.util.hash_pandas_object(value, index=True).to_numpy().tobytes())
        except TypeError:  # unhashable cells (lists)
            return None
        digest.update(repr((list(value.columns), list(map(str, value.dtypes)), value.attrs)).encode())
        return f"frame:{digest.hexdigest()}"
    return None


@st.cache_data(show_spinner=False, max_entries=1024)
def _call(name: str, path: str, stamp: tuple, args: tuple, kwargs: tuple, _store: Store):
    def compute():
        return _FUNCTIONS[name](_store, *args, **dict(kwargs))

    asked = _key_text((args, kwargs))
    if asked is None:  # arguments with no stable text: this process's cache only
        return compute()
    study = args[0] if args and isinstance(args[0], str) else ""
    result, _ = cached_frame(_store, study, f"{name}:{asked}", compute)
    return result


def cached(fn: Callable, store: Store, *args, **kwargs):
    """``fn(store, *args, **kwargs)``, computed once per store content and arguments."""
    name = f"{fn.__module__}.{fn.__qualname__}"
    _FUNCTIONS[name] = fn
    return _call(name, str(store.path), store.content_stamp(), args, tuple(sorted(kwargs.items())), store)
