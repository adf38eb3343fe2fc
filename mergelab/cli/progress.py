"""Progress on the terminal: a bar for a merge's modules, and the printer of a study run's unit events
(bars, per-actor counts, time by unit kind)."""

from __future__ import annotations

import sys


def module_bar(desc: str):
    from tqdm import tqdm

    state = {}

    def update(done: int, total: int, label: str) -> None:
        if "bar" not in state:
            state["bar"] = tqdm(total=total, desc=desc, unit="module", file=sys.stderr)
        bar = state["bar"]
        bar.set_postfix_str(label[-40:], refresh=False)
        bar.update(done - bar.n)
        if done == total:
            bar.close()

    return update


def event_printer():
    from tqdm import tqdm

    state = {}

    def on_event(ev: dict) -> None:
        if ev["event"] == "refused":
            state.setdefault("refused", []).append(ev["reason"])
            return
        if ev["event"] == "loaded":
            state.setdefault("timing", {})["load"] = [1, ev["seconds"], ev["rss_mb"]]
            return
        if ev["event"] == "waiting":
            if not state.get("waiting"):
                tqdm.write(f"waiting for {ev['running']} unit(s) running in another worker", file=sys.stderr)
            state["waiting"] = True
            return
        if "bar" not in state:
            state["bar"] = tqdm(total=state.get("total"), desc="units", unit="unit", file=sys.stderr)
        bar = state["bar"]
        label = (
            ev["kind"]
            + ":"
            + ",".join(str(v) for k, v in ev["payload"].items() if k != "params" and not isinstance(v, list))
        )
        if ev["event"] == "start":
            bar.set_postfix_str(label[-50:])
        elif ev["event"] == "lost":
            tqdm.write(f"unit requeued: {label}: {ev['reason']}", file=sys.stderr)
        elif ev["event"] == "done":
            bar.update(1)
            if ev.get("actor"):
                state.setdefault("actors", {})
                state["actors"][ev["actor"]] = state["actors"].get(ev["actor"], 0) + 1
                bar.set_postfix_str(f"{ev['actor']}: {state['actors'][ev['actor']]} done", refresh=False)
            kind = ev["kind"] + (":pair" if str(ev["payload"].get("group", "")).startswith("pair:") else "")
            n, secs, rss = state.setdefault("timing", {}).get(kind, [0, 0.0, 0.0])
            state["timing"][kind] = [n + 1, secs + ev["seconds"], max(rss, ev["rss_mb"])]
        elif ev["event"] == "failed":
            bar.update(1)
            tqdm.write(f"unit failed: {label}: {ev['error']}", file=sys.stderr)

    return on_event, state
