# genretag: `make demo` runs the whole pipeline end to end; `make test` runs the test suite.
# Both bootstrap the machine first (system packages + .venv), idempotently.
.PHONY: bootstrap demo test test-unit test-all bench bench-quick faults clean

bootstrap:
	bash scripts/bootstrap.sh

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

# The fast tier: no stack, no training, no FFmpeg/decoder/tool processes (tests/conftest.py).
test-unit:
	bash scripts/bootstrap.sh
	.venv/bin/python -m pytest -q -m unit $(ARGS)

test-all:
	bash scripts/test.sh -m "slow or not slow"

bench:
	bash scripts/bootstrap.sh
	.venv/bin/python -m bench.run $(ARGS)
	.venv/bin/python -m bench.pretrained $(PRETRAINED_ARGS)
	.venv/bin/python -m bench.similarity
	.venv/bin/python -m bench.from_store
	.venv/bin/python -m bench.modelsets

bench-quick:
	bash scripts/bootstrap.sh
	.venv/bin/python -m bench.run --quick $(ARGS)
	.venv/bin/python -m bench.pretrained --quick $(PRETRAINED_ARGS)
	.venv/bin/python -m bench.similarity --quick
	.venv/bin/python -m bench.from_store --quick
	.venv/bin/python -m bench.modelsets --quick

faults:
	bash scripts/faults.sh $(ARGS)

clean:
	rm -rf .genretag data/demo models/demo.pt .pytest_cache
