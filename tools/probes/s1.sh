# Session 2026-11-29, 23:00 first call: next.sh (GPU tests, seed table, big, timeline), then the
# exp-early-order patch: its GPU tests and an alternated A/B of FWI_TILE_ORDER=rows|default
# within its one build (seed c-gpu-fp32, big c-gpu-fp32).
set -u
root=$PWD
bash tools/probes/next.sh
tree=/tmp/tree_eo; rm -rf $tree; mkdir -p $tree
tar --exclude=./patches --exclude=./.devsite --exclude=./.venv --exclude=./build --exclude=./runs -cf - . | (cd $tree && tar -xf -)
cd $tree && git apply $root/patches/exp-early-order.patch || { echo "patch failed"; exit 1; }
export PYTHONPATH=/tmp/site:$tree
echo "== early-order GPU tests (test_compiled)"
python3 -m pytest -q -m gpu tests/test_compiled.py -p no:cacheprovider 2>&1 | grep -E "^FAILED|passed|failed" | head -6
for o in rows interior rows interior; do
  echo "== FWI_TILE_ORDER=$o"
  FWI_TILE_ORDER=$o python3 -m fwi_cli.bench --problem seed --configs c-gpu-fp32,c-gpu-int8 --iters 7 2>&1 | grep "^| seed"
  FWI_TILE_ORDER=$o python3 -m fwi_cli.bench --problem big --configs c-gpu-fp32 --iters 3 2>&1 | grep "^| big"
done
