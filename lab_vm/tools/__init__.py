"""The tools on top: the lab-vm command (cli), benchmarks, doctor, diagrams, HTML tables and
backtraces for notebook cells (tables, backtrace), a long cell's announcement and progress
bar (progress), notebook working copies (workbench)."""
