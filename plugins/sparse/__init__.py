"""Sparse decoding: FFN weights served from disk (row-column bundles, a DRAM neuron cache, a cost model)."""
