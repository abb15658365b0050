"""The job layer: recipe file -> data -> stages -> export -> verify -> report.

Imports point one way: ``recipes`` uses ``zoo``; ``zoo`` never imports ``recipes``.
"""
