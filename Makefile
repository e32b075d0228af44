# Thin wrappers around the README's commands.
PY := .venv/bin/python

.PHONY: setup run compare test test-fast lint leaderboard preview smoke wheel-check

setup:
	bash scripts/setup.sh

run: setup            ## the main job on the embedded default data
	$(PY) run.py tokenizer=hybrid

compare: setup        ## the three tokenizers, same data and protocol
	$(PY) run.py -m tokenizer=discrete,continuous,hybrid

test: setup           ## the full suite (slow tests included), as CI runs it
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint:
	.venv/bin/ruff check .

leaderboard:
	$(PY) -m hartkit.tools.leaderboard

preview:
	$(PY) run.py stages=[preview] data=synthscenes

smoke:                ## every stage in seconds (outputs under outputs/smoke/)
	$(PY) run.py experiment=smoke

wheel-check: setup    ## the built wheel in a fresh venv, run from outside the checkout (as CI)
	bash scripts/check_wheel.sh
