#!/usr/bin/env bash
# The main job from nothing (called by `make demo`): train a short BERT-CRF (MiniLM-L6) on
# Twitter-2017, evaluate it on the test split, and tag the sample posts that come with images.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${MMNER_DATA_DIR:-../shared/data}
if [ ! -f "$DATA/twitter2017/train.txt" ]; then
  echo "mmner demo: no Twitter-2017 data in '$DATA'." >&2
  echo "  The public MNER sets (UMT release: twitter2015/ and twitter2017/ with train/valid/test.txt)" >&2
  echo "  are at https://github.com/jefferyYu/UMT (data/); unpack them and run: MMNER_DATA_DIR=/path/to/data make demo" >&2
  exit 2
fi
export MMNER_DATA_DIR=$DATA

RUN=runs/demo
if [ -f "$RUN/model.safetensors" ]; then
  echo "== $RUN is already trained; delete it to train again"
elif [ -f "$RUN/config.yaml" ]; then
  echo "== continuing the interrupted demo run in $RUN"
  mmner train configs/demo.yaml --output "$RUN" --resume
else
  echo "== training bert-crf (minilm-l6) on Twitter-2017, text only"
  mmner train configs/demo.yaml --output "$RUN"
fi

echo "== evaluating on twitter2017:test"
mmner evaluate "$RUN" --data twitter2017:test

SAMPLES="$DATA/images/twitter2017_samples/test/texts.json"
echo "== tagging the sample posts in $SAMPLES"
mmner predict "$RUN" --input "$SAMPLES" --output "$RUN/samples.jsonl"
python - "$RUN/samples.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1], encoding="utf-8"):
    post = json.loads(line)
    tokens = list(post["tokens"])
    for ent in reversed(post["entities"]):
        tokens[ent["start"]:ent["end"]] = ["[" + " ".join(tokens[ent["start"]:ent["end"]]) + "]" + ent["type"]]
    print(f"  {post.get('image', '-')}: {' '.join(tokens)}")
PY
