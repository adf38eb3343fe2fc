"""A study from spec to stored rows: the spec, task data, planning units, the worker that runs one, the
executors and driver that run them all, adapter training, and the bundled studies."""
