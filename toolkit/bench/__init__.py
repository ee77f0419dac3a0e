"""`toolkit-bench`: training-cost sweeps ("Computational Bottlenecks of Training Small-scale
Language Models", Ashkboos et al. 2024) over any recipe keys, each cell run under `torchrun`.

sweep.py reads and expands a sweep file; cell.py is what every rank of a cell runs; measure.py
holds the arithmetic (throughput without warm-up, spread, MFU, Token/$ and Loss/$); runner.py
launches cells and keeps the results CSV; figures.py draws the paper's four figures; cli.py is
the command.
"""
