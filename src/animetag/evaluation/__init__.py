"""Stage 5, evaluation: evaluate a run, compare it with published figures and foreign taggers,
the leakage, ablation and teach studies, throughput benchmarks and the figures. Imports the
foundation and every stage before it; nothing in the package imports it but the entry
modules (cli, workspace)."""
