"""The offline, analyst side: training, segment profiles, plots and the HTML report.

It reads the customer state (Redis or an export file) and writes models and reports; the
streaming worker never imports it, so its process loads neither scikit-learn, pandas nor
matplotlib. See docs/segmentation.md and docs/report.md.
"""
