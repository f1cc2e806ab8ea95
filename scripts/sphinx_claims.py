"""Sphinx extension for the book: each notebook page ends with its entries from the claims ledger (book/claims.json).

The table is generated at build time from the ledger that `make claims` writes (scripts/claims.py), so it cannot
drift from what ran: every claim the notebook makes through `helpers.claims.claim`, whether it held, the values it
saw, and the profile, device, date and run time of that run. When the notebook's code or one of its helpers
modules changed since, the page says the entry is stale. Loaded from _config.yml (`sphinx: local_extensions`).
"""

from __future__ import annotations

import html
import sys
from pathlib import Path

from docutils import nodes

ROOT = Path(__file__).resolve().parent.parent


def _ledger_script():
    sys.path.insert(0, str(ROOT / "scripts"))
    import claims

    return claims


def _value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return str(value)


def claims_table(notebook: Path, ledger: dict, script) -> str:
    """The HTML section for one notebook: one table per recorded profile, or a line saying none was recorded."""
    entries = ledger.get(notebook.stem, {})
    parts = ['<section class="claims-ledger" id="claims-ledger">', "<h2>Claims checked by a machine</h2>"]
    if not entries:
        parts.append("<p>No run of this notebook is recorded in the claims ledger yet (<code>make claims</code>).</p>")
    for profile, entry in sorted(entries.items()):
        stale = script.problems(notebook, ledger, profile)
        asserted = [c for c in entry["claims"] if c["asserted"]]
        held = sum(c["held"] for c in asserted)
        threads = entry.get("threads")
        shared = f", {threads} thread(s), beside another notebook" if threads else ""
        state = "current" if not stale else "stale: " + "; ".join(s.split(": ", 1)[1] for s in stale)
        parts.append(
            f"<p>The <strong>{html.escape(profile)}</strong> profile, run by <code>make claims</code> on "
            f"{html.escape(entry['date'])} ({html.escape(entry['device'])}, {entry['seconds']:.0f} s{shared}): "
            f"{held} of {len(asserted)} claims held. Ledger entry {html.escape(state)}.</p>"
        )
        if not entry["claims"]:
            parts.append("<p>This notebook states no claim: its checks are the asserts in its cells.</p>")
            continue
        rows = "".join(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>".format(
                html.escape(c["claim"]),
                ("held" if c["held"] else "<strong>failed</strong>") if c["asserted"] else "not asserted",
                html.escape(", ".join(f"{k} = {_value(v)}" for k, v in c["values"].items())),
            )
            for c in entry["claims"]
        )
        parts.append(
            '<table class="table claims-table"><thead><tr><th>claim</th><th>result</th><th>values</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>"
        )
    parts.append("</section>")
    return "\n".join(parts)


def add_claims(app, doctree, docname):
    """Append the ledger's table to a notebook page (pages that are not notebooks are left alone)."""
    notebook = ROOT / f"{docname}.ipynb"
    if not notebook.is_file():
        return
    script = _ledger_script()
    sections = list(doctree.findall(nodes.section))
    target = sections[0] if sections else doctree
    target.append(nodes.raw("", claims_table(notebook, script.load_ledger(), script), format="html"))


def setup(app):
    app.connect("doctree-resolved", add_claims)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
