"""Thin routers per resource: parse the request, call crud in one transaction, render
(helpers in web/views.py)."""
