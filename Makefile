# The two commands of the README. Both install what is missing first (scripts/install.sh);
# `make test` runs on TEST_WORKERS pytest-xdist workers: two fill the two cores (a third runs out of memory
# beside the vLLM tests). tests/scheduling.py splits the work; the 20 slowest tests are printed last.
VENV ?= .venv
TEST_WORKERS ?= 2
export RAY_AUTH_MODE ?= disabled

.PHONY: install demo test lint docs

install:
	@bash scripts/install.sh

DEMO_DIR := runs/quickstart/$(shell date +%Y%m%d-%H%M%S)

demo: install
	$(VENV)/bin/gym-ray run configs/quickstart.yaml collect.output_dir=$(DEMO_DIR)
	@echo "report: $(DEMO_DIR)/.gym_ray/report.html (open it in a browser; gym-ray check $(DEMO_DIR) for the health checks)"

test: install
	$(VENV)/bin/python -m pytest -ra --durations=20 -n $(TEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check gym_ray tests benchmarks environments

docs: install
	$(VENV)/bin/mkdocs build --strict --site-dir site
