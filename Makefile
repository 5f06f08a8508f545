# The two commands of the README. Both set up .venv/ first (idempotent, seconds when up to date).
.PHONY: setup demo test
setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/sop demo

test: setup
	bash scripts/test.sh
