"""Which spec fields enter unit keys, across releases: a field added later enters only when it is not
at its default, and a removed field enters with the value it always had — so the finished units of
older studies keep their keys."""

from __future__ import annotations

from pydantic import BaseModel

# Fields added after studies were shipped: they enter unit keys only when set to something
# other than their default, so the keys (and finished results) of older studies stay valid.
TASK_FIELDS_ADDED_LATER = {"max_new_tokens", "lm_eval"}
STUDY_FIELDS_ADDED_LATER = {"dtype"}
# Fields removed since studies were shipped, with the value they always had: unit keys keep them,
# so shipped results stay recognised.
TASK_FIELDS_REMOVED = {"constructed": False}


def set_later(model: BaseModel, names: set[str]) -> dict:
    """The fields of ``names`` that are not at their default (see *_FIELDS_ADDED_LATER)."""
    return model.model_dump(include=names, exclude_defaults=True)
