"""DVC stage entry points: argv and files at the edges, the core does the work.

Each stage reads one validated params section, takes every path as an argument (dvc.yaml says each
path once), and writes outputs atomically.
"""
