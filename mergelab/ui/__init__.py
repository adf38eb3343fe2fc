"""The only Streamlit-aware code outside pages/: the router (menu, shared sidebar, page guard),
the cached store handle and study state, widgets and caching helpers."""
