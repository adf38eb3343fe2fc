"""Cache store-backed computations across reruns: keyed by the function, the store's file and its
content stamp (which changes on every commit), and the arguments. A page interaction that does not
change the store recomputes nothing."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from mergelab.storage.store import Store

_FUNCTIONS: dict[str, Callable] = {}


@st.cache_data(show_spinner=False, max_entries=1024)
def _call(name: str, path: str, stamp: tuple, args: tuple, kwargs: tuple, _store: Store):
    return _FUNCTIONS[name](_store, *args, **dict(kwargs))


def cached(fn: Callable, store: Store, *args, **kwargs):
    """``fn(store, *args, **kwargs)``, computed once per store content and arguments."""
    name = f"{fn.__module__}.{fn.__qualname__}"
    _FUNCTIONS[name] = fn
    return _call(name, str(store.path), store.content_stamp(), args, tuple(sorted(kwargs.items())), store)
