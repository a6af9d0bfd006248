# Key ncu sections for each shipped kernel (no PDL), one launch each, details as text under $OUT.
export FWI_PDL=0
for k in k_main k_psi k_grad_p1 k_adj_main k_p3; do
  timeout 120 ncu -k regex:$k --launch-skip 40 --launch-count 1 --section SpeedOfLight --section Occupancy \
    --section WarpStateStats --section LaunchStats --section MemoryWorkloadAnalysis --section SchedulerStats \
    python3 tools/probes/one.py > $OUT/ncu_$k.txt 2>&1
done
