"""Scoring and reporting: text metrics, bootstrap intervals, the compare rules and the HTML report."""
