"""The tools on top: the lab-vm command (cli), benchmarks, doctor, diagrams, notebook
working copies."""
