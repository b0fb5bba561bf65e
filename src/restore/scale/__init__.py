"""Scaling out: sweeps over grids of runs (local processes or a Ray cluster) and one run over several
processes with torch.distributed (`restore.distributed`)."""
