# The two commands of the README: `make book` and `make test`.
.PHONY: setup test book pdf bench lab clean-cache

setup:
	scripts/setup

test: setup
	.venv/bin/pytest -q -ra tests

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

# JupyterLab from the venv on the interactive workbooks; open the URL it prints.
lab: setup
	.venv/bin/jupyter lab --no-browser --ServerApp.root_dir=notebooks $$([ $$(id -u) = 0 ] && echo --allow-root)

# Benchmarks print figures (they are never timed tests); the peer virtme-ng is measured in the same run.
bench: setup
	scripts/setup-bench-peers
	PATH="$(CURDIR)/.venv/bin:$$PATH" .venv/bin/lab-vm bench --json
	.venv/bin/lab-vm bench gdb --json
	.venv/bin/lab-vm bench replay --json
