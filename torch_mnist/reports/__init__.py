"""Reports and tools: the reference's figures, analysis, plots, the seed reproduction, the benchmark and its peers."""
