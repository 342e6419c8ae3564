# Shortcuts; the README's commands work without make.
#   make bench         the benchmark suite (add ODOO_PATH=... ODOO_PYTHON=...
#                      for the real-Odoo parts); writes bench/results/ and
#                      the results section of bench/README.rst
#   make bench-quick   a short run, to try it out (bench/README.rst left
#                      alone)
#   make wheels        the addon's wheel and metapackage of every Odoo
#                      series (16.0-19.0), in dist/wheels
#   make test          the test-suite (bash tools/run-tests.sh)
#   make demo          the demo (bash tools/run-demo.sh)
PYTHON ?= .venv/bin/python

.PHONY: bench bench-quick setup-bench test demo wheels

setup-bench:
	bash tools/setup-bench.sh

bench: setup-bench
	$(PYTHON) -m bench.run --update-readme

bench-quick: setup-bench
	$(PYTHON) -m bench.run --quick --results-dir /tmp/bus-alt-bench-quick

test:
	bash tools/run-tests.sh

demo:
	bash tools/run-demo.sh

wheels:
	python3 tools/build_wheels.py
