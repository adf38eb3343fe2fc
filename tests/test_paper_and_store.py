import sqlite3

from mergelab.analysis import paper
from mergelab.storage import paper_rows
from mergelab.study.bundled import open_store


def test_store_is_wal_and_paper_load_is_idempotent(db_path):
    store = open_store(db_path)
    con = sqlite3.connect(db_path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    n = len(store.results(paper.STUDY_ID))
    assert n == 120 + 96
    paper_rows.load_into(store)
    assert len(store.results(paper.STUDY_ID)) == n
    groups = store.groups(paper.STUDY_ID)
    assert groups["(a)"][5] == "a.t6"
    mds = store.task_metrics(paper.STUDY_ID)
    assert mds.query("group_name == '(b)' and task == 'b.t6'")["value"].item() == 8.15
