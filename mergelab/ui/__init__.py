"""The only Streamlit-aware helpers: cached store handle, shared sidebar state."""
