# The two commands of the README: `make book` and `make test`.
.PHONY: setup test check book pdf bench lab clean-cache image

setup:
	scripts/setup

test: setup
	.venv/bin/ruff check .
	.venv/bin/pytest -q -ra tests

# The fast tier, for a change in progress: the linter, the unit tests (no VM) and a few VM
# smoke tests; under 3 minutes. `make test` (what CI runs) stays the whole suite.
check: setup
	.venv/bin/ruff check .
	.venv/bin/pytest -q -ra -m "unit or smoke" tests

book: setup
	scripts/build-book

# The whole book as one PDF, book/_build/vmexit.pdf (headless Chromium and poppler's pdfunite).
pdf: book
	scripts/book-pdf

# The built book on http://127.0.0.1:8000/ (another port: make serve PORT=8080).
.PHONY: serve
serve:
	@test -f book/_build/html/index.html || $(MAKE) book
	.venv/bin/python -m http.server --bind 127.0.0.1 --directory book/_build/html $${PORT:-8000}

# JupyterLab from the venv on your working copies of the interactive workbooks (notebooks/mine,
# git-ignored, never overwritten: see lab_vm/tools/workbench.py); open the URL it prints.
lab: setup
	.venv/bin/lab-vm notebooks
	.venv/bin/jupyter lab --no-browser --ServerApp.root_dir=notebooks/mine $$([ $$(id -u) = 0 ] && echo --allow-root)

# Benchmarks print figures (they are never timed tests); the peer virtme-ng is measured in the same run.
bench: setup
	scripts/setup-bench-peers
	PATH="$(CURDIR)/.venv/bin:$$PATH" .venv/bin/lab-vm bench --json
	.venv/bin/lab-vm bench gdb --json
	.venv/bin/lab-vm bench replay --json

# The container image `vmexit` (podman): the lab VM, JupyterLab, lab-vm check, scripts/grade and
# make book without installing anything on the reader's machine (README, "In a container").
image: setup
	scripts/build-image
