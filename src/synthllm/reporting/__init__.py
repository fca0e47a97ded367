"""Reporting, by output kind: tables (the DataFrames written as CSV), curves (learning-curve and
cost/accuracy-frontier tables), markdown (results.md, one function per section, assembled by
``markdown.document``) and charts (the PNGs). ``inputs`` reads the report stage's configured inputs;
``build`` builds and writes every output. Nothing here imports the stages."""
