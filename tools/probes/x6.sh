# Device call X6: GPU tests; bf16 host tiers coding whole chunks (default now) against block by
# block (Bf16Codec.whole_chunks=False), alternated; then seed gpu rows and big once more.
source tools/probes/dev_prelude.sh
python3 -m pytest -q -m gpu tests/ -p no:cacheprovider 2>&1 | grep -E "^FAILED|passed|failed" | head -8
ab() {  # $1: True/False
  python3 -c "import sys; import fwi_cli.storage.codecs as c; c.Bf16Codec.whole_chunks = $1
from fwi_cli.bench import main; sys.exit(main(sys.argv[1:]))" --problem seed --configs c-cpu-bf16,c-disk-bf16 --iters 7 2>&1 | grep -E "^\| seed" | head -2
}
for f in False True False True; do echo "== bf16 whole_chunks=$f"; ab $f; done
python3 -m fwi_cli.bench --problem seed --configs c-gpu-fp32,c-gpu-int8,c-cpu-fp16,c-cpu-int8,c-disk-fp16,c-disk-int8 --iters 7 --json "$OUT/seed6.json" 2>&1 | grep -E "^\| seed" | head -6
python3 -m fwi_cli.bench --problem big --configs c-gpu-fp32,c-gpu-int8 --iters 3 --json "$OUT/big6.json" 2>&1 | grep -E "^\| big" | head -2
