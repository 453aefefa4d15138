"""Analyses that explain where accuracy went, as a report document (tables and figures of numbers).

`document` defines the report; each analysis module builds its sections; `html` and `plots` render them.
"""
