"""The read-only web view of ``prefleak serve``: an overview and one page per explain subject.

Pages are built from the JSON documents the API serves (docs/web.md), escaped for HTML, with
charts drawn by plotly.js served from the installed ``plotly`` package: nothing is computed twice
and nothing is loaded from another origin.
"""
