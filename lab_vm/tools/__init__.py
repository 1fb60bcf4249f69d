"""The tools on top: the lab-vm command (cli), benchmarks, doctor, diagrams, HTML tables and
backtraces for notebook cells (tables, backtrace), notebook working copies (workbench)."""
