# The two commands of the README: `make book` and `make test`.
.PHONY: setup test book bench lab clean-cache

setup:
	scripts/setup

test: setup
	.venv/bin/pytest -q -ra tests

book: setup
	@echo "The book arrives with its own issue; the lab VM is built and ready (try: .venv/bin/lab-vm run -- uname -a)."

bench: setup
	.venv/bin/lab-vm bench --json
