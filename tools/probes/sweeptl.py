"""Timeline of a sweep: argv = config out_dir devices(e.g. cuda:0,cuda:1 or 'seq')."""
import sys, time

def main():
    t00 = time.perf_counter()
    from fwi_cli.experiment import Experiment, load_config, parallel
    cfg, out, devs = sys.argv[1], sys.argv[2], sys.argv[3]
    only = sys.argv[4] if len(sys.argv) > 4 else None
    t0 = time.perf_counter()
    ex = Experiment(load_config(cfg, [f"output_dir={out}"]))
    def prog(ev):
        t = time.perf_counter() - t0
        lab = ev.job.label if ev.job else ""
        if ev.kind == "iteration":
            if ev.iteration in (1, 2):
                print(f"{t:7.2f} s  iter {ev.iteration} {lab}", flush=True)
            return
        print(f"{t:7.2f} s  {ev.kind} {lab} {ev.message[:60]}", flush=True)
    print(f"import {t0-t00:.2f} s, Experiment built {time.perf_counter()-t0:.2f} s", flush=True)
    if devs == "seq":
        s = ex.sweep(only, progress=prog)
    else:
        s = parallel.sweep(ex, devs.split(","), only, progress=prog)
    print(f"TOTAL {time.perf_counter()-t00:.1f} s ({devs}); ok={s.ok}", flush=True)

if __name__ == "__main__":
    main()
