# Several experiment branches measured in one device call. Here, first:
#   mkdir -p patches && for b in exp-lanes-graphs exp-lanes-rows exp-fp16-fused; do git diff main $b > patches/$b.patch; done
#   sed -i "1i # env: FWI_GRAPHS=1" patches/exp-lanes-graphs.patch; sed -i "1i # env: FWI_CUDA_DEFINES=-DFWI_ROWS=2" patches/exp-lanes-rows.patch
# (patches/ is untracked, not ignored, so it travels with the working tree). On the device, after
# `source tools/probes/dev_prelude.sh`:
#   bash tools/probes/branches.sh patches/*.patch
# For main and for each patch applied to a copy of the tree: the GPU tests of test_compiled.py and
# the seed c-gpu-fp32 / c-gpu-int8 / c-cpu-fp16 rows (each build ~70 s). Extra environment for a
# patch: a line "# env: VAR=value ..." at its top (e.g. FWI_GRAPHS=1, FWI_CUDA_DEFINES=-DFWI_ROWS=2).
set -u
root=$PWD
run_one() {  # $1: label, $2: tree, $3...: env assignments
  local label=$1 tree=$2; shift 2
  echo "== $label"
  (cd "$tree" && env "$@" PYTHONPATH="/tmp/site:$tree" python3 -m pytest -q -m gpu tests/test_compiled.py \
      -p no:cacheprovider 2>&1 | grep -E "^FAILED|passed|failed" | head -6
   cd "$tree" && env "$@" PYTHONPATH="/tmp/site:$tree" python3 -m fwi_cli.bench --problem seed \
      --configs c-gpu-fp32,c-gpu-int8,c-cpu-fp16 --iters 7 2>&1 | grep -E "^\| seed" | head -3)
}
run_one main "$root" FWI_PROBE=main
for p in "$@"; do
  name=$(basename "$p" .patch)
  tree=/tmp/tree_$name
  rm -rf "$tree" && mkdir -p "$tree"
  (cd "$root" && tar --exclude=./patches --exclude=./.devsite --exclude=./.venv --exclude=./build --exclude=./runs -cf - .) | (cd "$tree" && tar -xf -)
  (cd "$tree" && git apply "$root/$p" 2>/dev/null || patch -p1 -s < "$root/$p") || { echo "== $name: patch failed"; continue; }
  envs=$(head -1 "$root/$p" | sed -n 's/^# env: //p')
  # shellcheck disable=SC2086
  run_one "$name ${envs}" "$tree" FWI_PROBE="$name" $envs
done
