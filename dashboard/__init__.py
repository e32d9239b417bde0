"""The live dashboard: segment sizes, changes, drift and the worker's health in a browser."""
