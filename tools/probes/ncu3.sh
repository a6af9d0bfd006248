# Memory-system view of each kernel (no PDL), one launch each: time, bytes through DRAM / L2 / L1,
# and throughput as a share of peak. CSV under $OUT, summary on stdout (run W5, docs/benchmarks.md).
export FWI_PDL=0
M=gpu__time_duration.sum,dram__bytes.sum,lts__t_bytes.sum,l1tex__t_bytes.sum,smsp__inst_executed.sum
M=$M,sm__throughput.avg.pct_of_peak_sustained_elapsed,lts__throughput.avg.pct_of_peak_sustained_elapsed
M=$M,dram__throughput.avg.pct_of_peak_sustained_elapsed,l1tex__throughput.avg.pct_of_peak_sustained_active
for k in k_psi k_main k_grad_p1 k_adj_main k_p3; do
  timeout 150 ncu -k regex:$k --launch-skip 40 --launch-count 1 --metrics $M --csv \
    python3 tools/probes/one.py > $OUT/ncu3_$k.csv 2>&1
  echo "== $k"; grep "$k" $OUT/ncu3_$k.csv | awk -F'","' '{print $(NF-2), $(NF-1), $NF}' | tr -d '"'
done
