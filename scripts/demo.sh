#!/usr/bin/env bash
# The main job from nothing (called by `make demo`): train mmner's own system, caption-distill, short (MiniLM-L6
# reading the post with the BLIP-2 caption of its image, trained towards the committed teacher's CRF marginals)
# on Twitter-2017, evaluate it on the test split beside the committed text-only row, and tag the
# sample posts that come with images, with and without their captions, to show what the image changed.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

DATA=${MMNER_DATA_DIR:-../shared/data}
if [ ! -f "$DATA/twitter2017/train.txt" ]; then
  echo "mmner demo: no Twitter-2017 data in '$DATA'." >&2
  echo "  The public MNER sets (UMT release: twitter2015/ and twitter2017/ with train/valid/test.txt)" >&2
  echo "  are at https://github.com/jefferyYu/UMT (data/); unpack them and run: MMNER_DATA_DIR=/path/to/data make demo" >&2
  exit 2
fi
export MMNER_DATA_DIR=$DATA

RUN=runs/demo
if [ -f "$RUN/config.yaml" ] && ! grep -q "name: caption-distill" "$RUN/config.yaml"; then
  earlier=$(sed -n 's/^  name: //p' "$RUN/config.yaml" | head -1)
  echo "== $RUN holds an earlier demo run (${earlier:-another model}); moving it to $RUN-${earlier:-old}"
  rm -rf "$RUN-${earlier:-old}" && mv "$RUN" "$RUN-${earlier:-old}"
fi
if [ -f "$RUN/model.safetensors" ]; then
  echo "== $RUN is already trained; delete it to train again"
elif [ -f "$RUN/config.yaml" ]; then
  echo "== continuing the interrupted demo run in $RUN"
  mmner train configs/demo.yaml --output "$RUN" --resume
else
  echo "== training caption-distill, mmner's own system (minilm-l6), on Twitter-2017 with the BLIP-2 captions of its images, two epochs towards the committed teacher"
  mmner train configs/demo.yaml --output "$RUN"
fi

echo "== evaluating on twitter2017:test"
mmner evaluate "$RUN" --data twitter2017:test --quiet
python scripts/demo_compare.py "$RUN" benchmarks/runs/bert-crf-minilm-twitter2017-s13
echo "== what the images did on twitter2017:test: the same model with each post's caption, and with none"
python scripts/demo_compare.py --effect "$RUN" twitter2017:test

echo "== tagging the 30 sample posts in $DATA/images (real images, their captions) with the caption, then from the text alone"
python scripts/demo_compare.py --samples "$RUN/samples.jsonl" "$RUN/samples-text.jsonl" "$DATA"/images/twitter201[57]_samples/*/
mmner predict "$RUN" --input "$RUN/samples.jsonl" --output "$RUN/tagged.jsonl" --quiet
mmner predict "$RUN" --input "$RUN/samples-text.jsonl" --output "$RUN/tagged-text.jsonl" --quiet
python scripts/demo_compare.py --show "$RUN/tagged.jsonl" "$RUN/tagged-text.jsonl"

echo "== done in $(( $(date +%s) - started )) s. Try it in the browser: mmner serve $RUN, then open http://127.0.0.1:8000/"
