"""MergeLab dashboard: the entrypoint of `streamlit run app.py`. The menu, the shared sidebar and the
page guard live in mergelab/ui/router.py."""

from mergelab.ui import router

router.run()
