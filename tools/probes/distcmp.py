"""Compare job stores: 1 process vs torchrun ranks. argv: label=run_dir/job.zarr ..."""
import sys, json, os, numpy as np
from fwi_cli.experiment import store
rows = {}
for arg in sys.argv[1:]:
    label, path = arg.split('=', 1)
    r = store.read_job(path)
    t = np.asarray(r.iter_time)
    rows[label] = dict(status=r.status, n=len(t), med=float(np.median(t[2:])), mn=float(t[2:].min()),
                       mx=float(t[2:].max()), first=float(t[0]), total=float(t.sum()),
                       dist=r.attrs.get('distributed'), loss=np.asarray(r.loss).tolist(),
                       vp=r.vp_final)
    print(f"{label}: {r.status} iters {len(t)} median {rows[label]['med']*1e3:.1f} ms "
          f"(min {rows[label]['mn']*1e3:.1f}, max {rows[label]['mx']*1e3:.1f}, first {t[0]*1e3:.0f}) "
          f"total {t.sum():.2f} s dist {rows[label]['dist']}")
labels = list(rows)
base = rows[labels[0]]
for lab in labels[1:]:
    o = rows[lab]
    if len(o['loss']) == len(base['loss']) and o['vp'].shape == base['vp'].shape:
        dl = np.max(np.abs(np.array(o['loss']) - base['loss']) / np.abs(base['loss']))
        dv = np.linalg.norm(o['vp'] - base['vp']) / np.linalg.norm(base['vp'])
        dm = np.max(np.abs(o['vp'] - base['vp']))
        print(f"{lab} vs {labels[0]}: loss max rel {dl:.2e}, vp_final rel L2 {dv:.2e}, max |dv| {dm:.3e} m/s, "
              f"speed-up {base['med']/o['med']:.2f}x")
out = os.environ.get('OUT')
if out:
    for r in rows.values():
        r.pop('vp')
    with open(os.path.join(out, 'dist.json'), 'a') as f:
        f.write(json.dumps(rows) + '\n')
