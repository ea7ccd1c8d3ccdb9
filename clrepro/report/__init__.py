"""Reporting: tidy results CSVs with confidence intervals, the published numbers and the verdicts
against them, tables and plots."""
