"""Sphinx extension for the book: every <script> tag once per page.

Sphinx 7.4 keeps an inline script that an extension adds with `app.add_js_file(None, body=...)` after the builder
started twice (once as filename None, once as ''). sphinx-thebe's `const THEBE_JS_URL = ...` then appears twice on
every page, and the browser reports "Identifier 'THEBE_JS_URL' has already been declared". This drops the repeats.
Loaded from _config.yml (`sphinx: local_extensions`); tests/test_browser.py fails on any console error.
"""


def unique_scripts(app, pagename, templatename, context, doctree):
    """Keep the first of each script (same file or body, priority and attributes) on this page."""
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = (script.filename or "", script.priority, tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"][:] = unique


def setup(app):
    app.connect("html-page-context", unique_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
